"""`python -m gpubox`. A signal while gpubox is still loading is told plainly too (the
CLI's own handlers take over once it has loaded): nothing was made yet."""

import shlex
import signal
import sys


def _loading(signum: int, _frame: object) -> None:
    name = signal.Signals(signum).name
    sys.stderr.write(f"error: interrupted by {name} while gpubox was starting\n"
                     "nothing was made yet\n"
                     f"finish it:  gpubox {shlex.join(sys.argv[1:])}\n")
    sys.exit(128 + signum)


for _signum in (signal.SIGINT, signal.SIGTERM):
    signal.signal(_signum, _loading)

from gpubox.cli.main import run  # noqa: E402 - after the handlers, which cover this import

run()
