"""What is left of a box that is gone: found and removed, so `down` finishes the job.

An interrupted `down` (or a launch cut short, or an instance terminated in the console)
can leave a box's tagged security group and key pair in AWS, its private key file, its
ssh config entry, host-key pin, Jupyter token and cache row here. None of it holds data
or bills per hour; `down NAME` run again removes it instead of "no box called NAME".
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from gpubox.errors import GpuboxError
from gpubox.providers import get_provider
from gpubox.providers.base import Box, BoxState, Progress, Provider

if TYPE_CHECKING:
    from gpubox.config import Settings
    from gpubox.state import State


def find_by_key_file(
    settings: Settings, state: State, name: str, on_progress: Progress | None
) -> tuple[Provider, Box] | None:
    """A live AWS box the cache forgot (lost or damaged state): its key file says it is one."""
    from gpubox.providers.aws.keypairs import key_path

    if _aws_used(state) or not _exists(key_path(settings, name)):
        return None  # find_box asked AWS already, or nothing says it is an AWS box
    prov = get_provider("aws", settings, on_progress=on_progress)
    box = prov.find(name)
    if box is None or box.state is BoxState.TERMINATED:
        return None
    state.remember(box)
    return prov, box


def _aws_used(state: State) -> bool:
    """gpubox has used AWS from here (box._aws_in_use without the credentials check)."""
    return bool(state.get("aws.regions"))


def _exists(path: Any) -> bool:
    try:
        return bool(path.exists())
    except OSError:  # a folder we cannot read: as good as absent for finding a box
        return False


def forget_here(settings: Settings, state: State, name: str) -> list[str]:
    """Remove what this machine keeps about a box that is gone: its ssh config entry,
    host-key pin, Jupyter token and cache row (the run is closed). What was there."""
    from gpubox.providers.ssh import forget_client_files
    from gpubox.remote.ssh_config import update_ssh_config

    removed = []
    if update_ssh_config(settings, name, None, only_if_present=True):
        removed.append("ssh config entry")
    forget_client_files(settings, name)
    from gpubox.jupyter import forget_port

    forget_port(state, name)
    if state.box(name) is not None:
        removed.append("cached status")
    state.run_stopped(name, time.time())
    state.forget(name)
    state.journal(name, "down")
    return removed


def remove(
    settings: Settings, state: State, name: str, on_progress: Progress | None = None
) -> list[str]:
    """What is left of a box with no live instance or host: tagged security groups and
    key pairs in AWS that nothing uses, its key file and its local entries. Removed."""
    say = on_progress or (lambda _: None)
    removed: list[str] = []
    from gpubox.providers.aws.keypairs import key_path, remove_key_file

    key_file = key_path(settings, name)
    gone_in_aws = False  # seen gone: a terminated instance, or a key pair nothing used
    if _aws_used(state) or _exists(key_file):
        try:
            from gpubox.providers.aws.network import ended_instances
            from gpubox.providers.aws.network import remove_leftovers as aws_leftovers

            for region in get_provider("aws", settings).regions():  # type: ignore[attr-defined]
                removed += aws_leftovers(settings, region, name)
                gone_in_aws = gone_in_aws or bool(ended_instances(settings, region, name))
            gone_in_aws = gone_in_aws or any(r.startswith("key pair") for r in removed)
        except GpuboxError as exc:
            say(f"could not look for what is left in AWS: {exc.message}")
    if _exists(key_file):
        if gone_in_aws:  # no live box of this name where gpubox looked, and proof it is gone
            remove_key_file(key_file)
            removed.append(f"key file {key_file}")
        else:
            say(f"kept {key_file}: nothing where gpubox looked shows its box is gone")
    from gpubox import jupyter

    if state.tunnel(name) is not None:
        jupyter.close_jupyter(settings, state, name)
        removed.append("Jupyter tunnel")
    if removed or _known_here(settings, state, name):
        removed += forget_here(settings, state, name) or ["host-key pin and Jupyter token"]
    for item in removed:
        say(f"removed {item}")
    return removed


def _known_here(settings: Settings, state: State, name: str) -> bool:
    from gpubox.jupyter import has_token
    from gpubox.remote.hostkeys import pinned_keys
    from gpubox.remote.ssh_config import has_entry

    return bool(
        state.box(name) is not None
        or has_entry(settings, name)
        or pinned_keys(settings, name)
        or has_token(settings, name)
    )
