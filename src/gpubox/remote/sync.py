"""`gpubox sync`: mirror a project folder to a box, honouring .gitignore and .gpuboxignore.

With rsync on both ends the ignore files are rsync dir-merge filters (`:- .gitignore`
in every folder), and only what changed is sent. Without it, a tar stream of the files
that are not ignored: `git ls-files` in a git repository (git's own rules), else the
top folder's .gitignore and .gpuboxignore read simply (see `ignored`). The .git folder
is never sent. Nothing on the box is deleted unless asked (`delete=True`, rsync only).
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
import subprocess
import time
from collections.abc import Callable

from gpubox.errors import InvalidInput, NotFound
from gpubox.remote.tarstream import send_list
from gpubox.remote.transfer import Copied, Far, OnProgress, rsync

IGNORE_FILES = (".gitignore", ".gpuboxignore")
FILTERS = ("- .git/", *(f":- {name}" for name in IGNORE_FILES))


def remote_dir_for(local_dir: str, remote_dir: str | None) -> str:
    return remote_dir or "~/" + os.path.basename(os.path.abspath(local_dir))


def sync(
    far: Far,
    local_dir: str,
    remote_dir: str | None = None,
    *,
    on_progress: OnProgress | None = None,
    delete: bool = False,
    use_rsync: bool = True,
) -> Copied:
    """Send LOCAL_DIR's files that are not ignored to REMOTE_DIR (default ~/<its name>)."""
    import shutil

    root = os.path.abspath(os.path.expanduser(local_dir))
    if not os.path.isdir(root):
        raise NotFound(f"{local_dir} is not a folder here",
                       hint="sync sends a folder; use `gpubox cp` for one file")
    far.probe()
    target = far.absolute(remote_dir_for(root, remote_dir))
    reason = ("asked for tar" if not use_rsync
              else "rsync is not installed on this machine" if shutil.which("rsync") is None
              else f"rsync is not installed on '{far.name}'" if not far.has_rsync else "")
    if reason:
        if delete:
            raise InvalidInput("--delete needs rsync on both ends", hint=reason)
        send_list(far, root, files_to_send(root), target)
        return Copied("tar", target, reason=reason)
    far.run(f"mkdir -p {_q(target)}")
    sent = rsync(far, [root + "/", far.rsync_arg(target + "/")], on_progress=on_progress,
                 filters=FILTERS, extra=["--delete"] if delete else ())
    return Copied("rsync", target, sent=sent)


def _q(path: str) -> str:
    import shlex

    return shlex.quote(path)


def ignored(rel: str, is_dir: bool, patterns: list[str]) -> bool:
    """A simple reading of gitignore lines: `name`, `*.ext`, `dir/`, `/anchored`, `a/b*`.
    Not supported: `!negation`, `**` beyond fnmatch's `*`, ignore files in subfolders."""
    base = posixpath.basename(rel)
    for pattern in patterns:
        if pattern.endswith("/"):
            if not is_dir:
                continue
            pattern = pattern.rstrip("/")
        anchored = "/" in pattern
        pattern = pattern.lstrip("/")
        if fnmatch.fnmatch(rel if anchored else base, pattern):
            return True
    return False


def files_to_send(root: str) -> list[str]:
    """The files of `root` that are not ignored, relative to it."""
    patterns = [p for name in IGNORE_FILES for p in _patterns_of(root, name)]
    git = subprocess.run(["git", "-C", root, "ls-files", "-z", "-co", "--exclude-standard"],
                         capture_output=True, stdin=subprocess.DEVNULL)
    if git.returncode == 0 and os.path.isdir(os.path.join(root, ".git")):
        names = [n for n in os.fsdecode(git.stdout).split("\0") if n]
        extra = _patterns_of(root, ".gpuboxignore")
        return [n for n in names if os.path.lexists(os.path.join(root, n))
                and not any(ignored(part, True, extra) for part in _parents(n))
                and not ignored(n, False, extra)]
    found = []
    for folder, dirs, files in os.walk(root):
        rel_folder = os.path.relpath(folder, root)
        rel_folder = "" if rel_folder == "." else rel_folder
        dirs[:] = [d for d in dirs if d != ".git"
                   and not ignored(posixpath.join(rel_folder, d), True, patterns)]
        found += [rel for f in files
                  if not ignored(rel := posixpath.join(rel_folder, f), False, patterns)]
    return sorted(found)


def _patterns_of(root: str, name: str) -> list[str]:
    path = os.path.join(root, name)
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8", errors="replace") as fh:
        return [s for line in fh if (s := line.strip()) and not s.startswith(("#", "!"))]


def _parents(rel: str) -> list[str]:
    parts = rel.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def snapshot(root: str) -> dict[str, tuple[int, int]]:
    """(mtime, size) of every file under root but .git: what --watch compares."""
    seen: dict[str, tuple[int, int]] = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != ".git"]
        for name in files:
            path = os.path.join(folder, name)
            try:
                st = os.stat(path)
            except OSError:
                continue
            seen[path] = (st.st_mtime_ns, st.st_size)
    return seen


def watch(
    root: str,
    first: Callable[[], None],
    again: Callable[[], None],
    *,
    interval: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Call `first`, then `again` after each change under root (polling mtimes), until
    Ctrl-C. Each look is taken before the sync it starts: a change made during a
    sync is seen by the next look."""
    last = snapshot(root)
    first()
    while True:
        sleep(interval)
        now = snapshot(root)
        if now != last:
            last = now
            again()
