"""One gpubox at a time per box name on this computer: a file lock around find-or-launch.

Two `gpubox up box1` started together in two terminals must end with one box: the
second waits while the first finds or makes it, then finds it. (Across computers the
cloud side answers: the launch's ClientToken and the check for a second instance.)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from gpubox.errors import GpuboxError
from gpubox.localfiles import private_dir

if TYPE_CHECKING:
    from gpubox.config import Settings
    from gpubox.providers.base import Progress


@contextlib.contextmanager
def box_lock(settings: Settings, name: str, on_wait: Progress | None = None) -> Iterator[None]:
    """Hold the lock of box `name` (flock on DATA/locks/NAME.lock; the kernel frees it
    when the process ends, however it ends). An unwritable data folder: no lock, and
    the cloud-side checks still hold."""
    path = settings.data_dir / "locks" / f"{name}.lock"
    with _held(path, on_wait, f"another gpubox is bringing up '{name}' here; waiting for it"):
        yield


@contextlib.contextmanager
def volume_lock(
    settings: Settings, request: str | None, on_wait: Progress | None = None
) -> Iterator[None]:
    """One `up` at a time per data volume (`--volume NAME[:GiB]`) on this computer, from
    the check before launch to the attach: a second `up` asking for the same volume waits,
    then finds it taken and refuses before it launches anything. No volume: no lock."""
    name = (request or "").partition(":")[0].strip()
    if not name:
        yield
        return
    path = settings.data_dir / "locks" / "volumes" / f"{name}.lock"
    with _held(path, on_wait, f"another gpubox is attaching volume '{name}' here; waiting for it"):
        yield


@contextlib.contextmanager
def _held(path, on_wait: Progress | None, waiting: str) -> Iterator[None]:
    try:
        private_dir(path.parent)  # 0700 whatever the umask (mkdir's default is 0777 less it)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except (OSError, GpuboxError):
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait(waiting)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
