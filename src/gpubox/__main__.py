"""`python -m gpubox`: the same start as the installed `gpubox` script (gpubox.entry)."""

from gpubox.entry import main

main()
