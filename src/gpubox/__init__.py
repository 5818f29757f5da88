"""gpubox: your own GPU deep-learning workstation, in the cloud, over SSH, or here.

The command line (`gpubox.cli`) is a thin layer over this library; everything it
does, a Python user can do through `gpubox.box`.
"""

__version__ = "0.1.0"
