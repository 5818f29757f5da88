"""gpubox's own files on this machine: private, replaced atomically, updated under a lock.

Every file gpubox replaces (ssh config, known_hosts, hosts.json, config.toml, key files)
goes through `write_private`: a unique temporary name in the same folder, then one
`os.replace`, so a reader sees the old file or the new one, never half of one, and two
commands writing at once never trip over each other's temporary file. A read-modify-write
of a shared file (one box's entry in the ssh config) holds `locked(path)` around it, so
parallel `up`/`down` of different boxes never lose an entry. Folders are 0700 and files
0600 whatever the umask: they hold private keys, host keys and Jupyter tokens.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gpubox.errors import GpuboxError

DIR_MODE = 0o700
FILE_MODE = 0o600


def cannot(action: str, path: Path, exc: OSError) -> GpuboxError:
    """One clear error naming the file and the fix, for an OSError on gpubox's own files."""
    why = exc.strerror or type(exc).__name__
    return GpuboxError(
        f"cannot {action} {path}: {why}",
        hint=f"make {path.parent} yours and writable (chmod u+rwx), "
        "or point GPUBOX_HOME at a folder you can write",
    )


def private_dir(path: Path) -> Path:
    """The folder, made 0700 with any missing parents (also 0700), whatever the umask.
    Folders that exist already are left as they are (see `tighten`)."""
    missing: list[Path] = []
    here = path
    while not here.exists():
        missing.append(here)
        if here.parent == here:
            break
        here = here.parent
    try:
        for folder in reversed(missing):
            try:
                folder.mkdir(mode=DIR_MODE)
            except FileExistsError:  # another gpubox made it just now
                pass
            os.chmod(folder, DIR_MODE)  # mkdir's mode is cut by the umask; this is not
    except OSError as exc:
        raise cannot("make the folder", path, exc) from None
    return path


def tighten(path: Path) -> None:
    """chmod an existing gpubox folder to 0700 / file to 0600, when this user owns it."""
    try:
        info = path.stat()
        if info.st_uid != os.getuid():
            return
        want = DIR_MODE if path.is_dir() else FILE_MODE
        if info.st_mode & 0o777 != want:
            os.chmod(path, want)
    except OSError:
        pass  # a folder we cannot chmod still works; writes into it say what is wrong


def private_file(path: Path) -> Path:
    """The file made empty and 0600 if missing, chmod-ed to 0600 if it is this user's and
    wider (made by an older gpubox or under another umask), for a writer that creates its
    file itself (SQLite makes its database 0644 less the umask, and its -wal and -shm
    files with the database's mode)."""
    private_dir(path.parent)
    try:
        # O_EXCL: a file that is there is never opened here. Closing any descriptor of a
        # file drops every POSIX lock this process holds on it, SQLite's included: a
        # second State() in a process whose first one held the write lock let other
        # processes write under it.
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    except FileExistsError:
        pass
    except OSError as exc:
        raise cannot("write", path, exc) from None
    tighten(path)
    return path


def open_private(path: Path, mode: str = "w", buffering: int = -1):
    """`open(path, mode)` for a new or replaced file of gpubox's (a log), 0600 whatever the
    umask, in a 0700 folder; an OSError is one clear error naming the file."""
    private_dir(path.parent)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if "a" in mode else os.O_TRUNC)
    try:
        fd = os.open(path, flags, FILE_MODE)
        os.fchmod(fd, FILE_MODE)  # a file that was there keeps its mode otherwise
    except OSError as exc:
        raise cannot("write", path, exc) from None
    return os.fdopen(fd, mode, buffering=buffering)


def write_private(path: Path, data: str | bytes, mode: int = FILE_MODE) -> Path:
    """Replace `path` with `data` atomically; the file is `mode` (0600) from its first byte."""
    private_dir(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise cannot("write", path, exc) from None
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode() if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise cannot("write", path, exc) from None
    except BaseException:  # interrupted: no temporary file is left behind
        Path(tmp).unlink(missing_ok=True)
        raise
    _sweep(path)
    return path


def _sweep(path: Path, older_than: float = 3600.0) -> None:
    """Temporary files of this name that a killed gpubox (SIGKILL) left: an hour old, gone."""
    import time

    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            if time.time() - stale.stat().st_mtime > older_than:
                stale.unlink()
        except OSError:
            pass


def is_file(path: Path) -> bool:
    """Whether the file is there; a folder that cannot be looked into is one clear error
    naming the folder and the fix (pathlib's is_file raises PermissionError there)."""
    try:
        return path.is_file()
    except OSError as exc:
        raise cannot("read", path, exc) from None


def read_text(path: Path) -> str | None:
    """The file's text, None when it does not exist; a clear error when it cannot be read
    (naming its folder when the folder is what cannot be read)."""
    try:
        return path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        if not os.access(path.parent, os.R_OK | os.X_OK):
            raise cannot("read", path, exc) from None
        raise GpuboxError(
            f"cannot read {path}: {exc.strerror or type(exc).__name__}",
            hint=f"make it readable by you (chmod u+r {path}), or move it away",
        ) from None


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock for a read-modify-write of `path` (a `.lock` file beside it).
    Locks are per process and released by the kernel when a process dies, even by SIGKILL."""
    import fcntl

    private_dir(path.parent)
    lock_path = path.with_name(f".{path.name}.lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, FILE_MODE)
    except OSError as exc:
        raise cannot("lock", path, exc) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
