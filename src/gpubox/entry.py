"""The `gpubox` command's first module, for the installed script and `python -m gpubox`
alike: a signal while gpubox is still loading is told plainly too (the CLI's own
handlers take over once it has loaded): nothing was made yet. It imports nothing of
gpubox's before the handlers are in place."""

import shlex
import signal
import sys


def _loading(signum: int, _frame: object) -> None:
    name = signal.Signals(signum).name
    sys.stderr.write(f"error: interrupted by {name} while gpubox was starting\n"
                     "nothing was made yet\n"
                     f"finish it:  gpubox {shlex.join(sys.argv[1:])}\n")
    sys.exit(128 + signum)


def main() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _loading)
    from gpubox.cli.main import run  # after the handlers, which cover this import

    run()
