"""A signal that reaches the installed `gpubox` script while it is still loading its
modules is told plainly (which signal, that nothing was made, the command to run again)
and exits 128+N, never a traceback: the script's first module (gpubox.entry) puts the
handlers in place before anything else of gpubox is imported."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


def _catches(pid: int, signum: int) -> bool:
    """Whether the process has a handler for `signum` (the kernel's SigCgt mask)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    for line in status.splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return False


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_the_installed_script_loads_is_told_and_exits_128_plus_n(
        isolation, signum):
    script = Path(sys.executable).with_name("gpubox")
    if not script.exists():
        pytest.skip(f"no installed gpubox script beside {sys.executable}")
    proc = subprocess.Popen([str(script), "status", "--refresh"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=os.environ.copy())
    deadline = time.monotonic() + 30
    # SIGTERM's handler is gpubox.entry's, set after its SIGINT one (Python itself
    # catches SIGINT from early in its start, before it can even write to stderr).
    while not _catches(proc.pid, signal.SIGTERM):
        assert proc.poll() is None and time.monotonic() < deadline, "no handler was set"
        time.sleep(0.001)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, (proc.returncode, out, err)
    assert "Traceback" not in err, err
    # Caught while loading ("while gpubox was starting") or, on a fast machine, by the
    # command's own handler once loaded: either way the signal is named.
    assert f"interrupted by {signal.Signals(signum).name}" in err, err
