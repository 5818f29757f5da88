"""A venv that sees this Python's packages, whether or not this Python is itself a venv.

What a test uses as a box's framework environment (~/.gpubox/venv) when the box is this
machine. `python -m venv --system-site-packages` alone is not enough when the suite runs
in a venv (`pip install -e '.[test]'` in one, as the README says): a venv made from a
venv is based on the base interpreter, so its "system" site-packages are the base's, not
the ones torch and its dependencies were installed into. A .pth file naming this
interpreter's site-packages closes the gap, as the bootstrap does when it reuses a host's
framework (gpubox-host-python.pth). A symlink to this python from outside its venv does
not work either: it loses pyvenv.cfg and starts the base interpreter.
"""

from __future__ import annotations

import site
import subprocess
import sys
from pathlib import Path


def venv_seeing_this_python(folder: Path, *, pip: bool = False) -> Path:
    """Make it at `folder` (with pip when asked); its python."""
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages",
                    *([] if pip else ["--without-pip"]), str(folder)], check=True)
    python = folder / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True).stdout.strip()
    ours = [*site.getsitepackages(), site.getusersitepackages()]
    Path(purelib, "gpubox-host-python.pth").write_text("\n".join(ours) + "\n")
    return python
