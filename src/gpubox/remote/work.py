"""Your work on a box: the files under the notebooks folder and ~/work changed since setup.

"Since setup" is the mtime of ~/.gpubox/state/notebooks, the record the bootstrap's
notebooks step writes when it puts the book's notebooks in ~/d2l (bootstrap.sh:
NOTEBOOK_DIR, `record notebooks`). A box never set up has no such file: nothing to list.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpubox.remote.tarstream import fetch_list
from gpubox.remote.transfer import Far

FOLDERS = ("d2l", "work")  # under the box's home: the notebooks folder, and ~/work
MARKER = ".gpubox/state/notebooks"

_FIND = f"""cd "$HOME" || exit 0
[ -f {MARKER} ] || exit 0
for d in {' '.join(FOLDERS)}; do
  [ -d "$d" ] && find "$d" -type f -newer {MARKER} -not -path '*/.ipynb_checkpoints/*' \\
    -printf '%s\\t%p\\n'
done
exit 0"""


@dataclass(frozen=True)
class ChangedFile:
    path: str  # relative to the box's home
    size: int


def changed_since_setup(far: Far) -> list[ChangedFile]:
    """The files under ~/d2l and ~/work newer than the setup's record, by path."""
    found = []
    for line in far.run(_FIND).splitlines():
        size, _, path = line.partition("\t")
        if size.isdigit() and path:
            found.append(ChangedFile(path, int(size)))
    return sorted(found, key=lambda f: f.path)


def fetch_work(far: Far, files: list[ChangedFile], target: str) -> None:
    """Copy these files from the box into the local folder `target` (their paths kept)."""
    if not far.home:
        far.probe()
    fetch_list(far, far.home, [f.path for f in files], target)
