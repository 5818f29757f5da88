"""A data volume on the box: format it only when new, mount it at ~/data, keep it mounted.

The work is scripts/mount_volume.sh, sent to the host on stdin through its Runner (it
finds the disk by volume id, so it works on any Nitro instance); this side reads its
one result line. The volume itself (making, attaching, moving) is providers/aws/volumes.py.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING

from gpubox.errors import GpuboxError, RemoteCommandFailed

if TYPE_CHECKING:
    from gpubox.remote.runner import Runner

MOUNT_DIR = "~/data"


@dataclass(frozen=True)
class Mounted:
    status: str  # formatted | existing
    device: str
    mount_dir: str = MOUNT_DIR


def mount_script() -> str:
    return resources.files("gpubox").joinpath("remote", "scripts", "mount_volume.sh").read_text()


def mount(runner: Runner, volume_id: str, name: str, mount_dir: str = MOUNT_DIR) -> Mounted:
    """Run mount_volume.sh on the box: format when new, mount, fstab line with nofail."""
    target = mount_dir.replace("~", "$HOME", 1)
    try:
        result = runner.run(
            f'bash -s -- {shlex.quote(volume_id)} "{target}"', input=mount_script(), timeout=300
        )
    except RemoteCommandFailed as exc:
        raise GpuboxError(
            f"volume '{name}' is attached but could not be mounted at {mount_dir}: "
            + (exc.output_tail.strip() or f"exit status {exc.returncode}"),
            hint="the volume and its files are kept; fix that and run the same `gpubox up` "
            "again (it only mounts, never formats a disk that has a filesystem)",
        ) from exc
    fields: dict[str, str] = {}
    for line in result.stdout.splitlines():
        if line.startswith("::gpubox volume "):
            fields = dict(p.split("=", 1) for p in line.split()[2:] if "=" in p)
    return Mounted(fields.get("status", "existing"), fields.get("device", ""), mount_dir)
