"""The guard from boot: an AWS box's EC2 user data installs the idle agent at first boot.

cloud-init (on both default images, the Deep Learning AMI and Ubuntu) runs the user
data as root before any SSH contact, so the box stops after its idle limit (and its
uptime cap) even when it is never set up. The user data is remote/scripts/guard.sh,
preceded by the box's settings and followed by the agent's files (without comments
and docstrings), the whole gzipped: cloud-init unzips gzipped user data itself, and
EC2's 16 KB limit (on the bytes sent) then holds about 50 KB of script. It holds no secret: any process on the box can read
its user data.
"""

from __future__ import annotations

import ast
import gzip
import shlex
import threading
from importlib import resources
from typing import TYPE_CHECKING

from gpubox.errors import GpuboxError

if TYPE_CHECKING:
    from gpubox.config import Settings
    from gpubox.providers.base import BoxSpec

MAX_USER_DATA = 16 * 1024  # EC2's limit, on the raw (not yet base64) user data
# Not needed before setup: the spot watcher (the bootstrap starts it on spot boxes) and
# the JupyterLab banner (no Jupyter before setup; idle.py does without it, with `wall`).
# The setup step copies every file.
NOT_AT_BOOT = ("spot_watch.py", "jupyter_notice.py", "idle_peers.py")
PAYLOAD_END = "__GPUBOX_AGENT__"


# Compacted once per process, under a lock: `bench --types` and the nodes of a box
# launch in parallel threads, and CPython 3.11's ast.parse is not safe across threads
# ("SystemError: AST constructor recursion depth mismatch", seen in this suite).
_AGENT_FILES: dict[str, str] = {}
_AGENT_FILES_LOCK = threading.Lock()


def agent_files() -> dict[str, str]:
    """The agent's modules the guard installs, by file name, compacted."""
    with _AGENT_FILES_LOCK:
        if not _AGENT_FILES:
            folder = resources.files("gpubox.remote") / "agent"
            _AGENT_FILES.update({
                f.name: compact(f.read_text())
                for f in sorted(folder.iterdir(), key=lambda f: f.name)
                if f.name.endswith(".py") and f.name not in NOT_AT_BOOT
            })  # fmt: skip
        return dict(_AGENT_FILES)


def compact(source: str) -> str:
    """The same module without comments and docstrings (a module keeps its first line):
    about a quarter smaller once gzipped, which keeps the whole agent inside EC2's 16 KB.
    The setup step later puts the commented files in their place."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        first = node.body[0] if node.body else None
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
            if not isinstance(first.value.value, str):
                continue
            if isinstance(node, ast.Module):
                first.value.value = first.value.value.split("\n")[0]  # argparse shows it
            else:
                node.body = node.body[1:] or [ast.Pass()]
    return ast.unparse(tree) + "\n"


def guard_settings(settings: Settings, spec: BoxSpec) -> dict[str, str]:
    """What the guard script reads: the box's limits and commands, nothing secret."""
    minutes = spec.idle_stop_minutes or 0
    return {
        "GPUBOX_GUARD_USER": settings.ssh_user_aws,
        "GPUBOX_IDLE_MINUTES": str(int(minutes)) if minutes > 0 else "off",
        "GPUBOX_MAX_HOURS": f"{settings.max_hours:g}" if settings.max_hours else "off",
        "GPUBOX_IDLE_STOP_COMMAND": settings.idle_stop_command or "",
        "GPUBOX_PRE_STOP": settings.pre_stop or "",
        "GPUBOX_PRE_STOP_SECONDS": str(int(settings.pre_stop_minutes) * 60),
        "GPUBOX_BOX_NAME": spec.name,
    }


def user_data(settings: Settings, spec: BoxSpec) -> bytes:
    """The EC2 user data of a new box: its guard, gzipped (the same bytes for the same
    box and gpubox). Raises when it would not fit EC2's limit."""
    script = resources.files("gpubox").joinpath("remote", "scripts", "guard.sh").read_text()
    body = script.split("\n", 1)[1]  # below the shebang, which the user data carries
    values = "".join(f"{k}={shlex.quote(v)}\n" for k, v in guard_settings(settings, spec).items())
    files = ""
    for name, content in agent_files().items():
        if f"\n{PAYLOAD_END}\n" in f"\n{content}":
            raise GpuboxError(f"agent file {name} holds the line {PAYLOAD_END}", hint="rename it")
        content += "" if content.endswith("\n") else "\n"
        files += f"put {name} <<'{PAYLOAD_END}'\n{content}{PAYLOAD_END}\n"
    text = f"#!/bin/bash\n# gpubox guard for box {shlex.quote(spec.name)}\n{values}{body}{files}finish\n"
    data = gzip.compress(text.encode(), compresslevel=9, mtime=0)
    if len(data) > MAX_USER_DATA:
        raise GpuboxError(
            f"the guard's user data is {len(data)} bytes, over EC2's limit of {MAX_USER_DATA}",
            hint="this is a gpubox bug, please report it",
        )
    return data


def cloud_init_note(image: str | None) -> str | None:
    """What `up` says when the image may lack cloud-init, which runs the guard at boot.

    The default images (dlami, ubuntu) have it, and so do images saved from gpubox boxes;
    an `ami-...` of the user's own choosing may not."""
    if image and image.strip().startswith("ami-"):
        return (
            f"if {image.strip()} has no cloud-init, the idle guard is not installed at boot: "
            "it comes with the setup step (do not use --no-setup with it)"
        )
    return None


def still_billing(last_step: str | None, spec: BoxSpec, max_hours: float | None) -> str | None:
    """What a failed `up` adds when its AWS box was launched: it bills, and what stops it."""
    if spec.provider != "aws" or last_step not in ("launched", "setup", "jupyter"):
        return None
    from gpubox.idle import describe_hours, describe_limit

    stops = []
    if spec.idle_stop_minutes:
        stops.append(f"{describe_limit(spec.idle_stop_minutes)} idle")
    if max_hours:
        stops.append(f"{describe_hours(max_hours)} up")
    how = (
        f"its guard (installed at first boot) stops it after {' or '.join(stops)}"
        if stops
        else "auto-stop is off, so it bills until you stop it"
    )
    return f"'{spec.name}' is running and billing: {how}; to stop it now: gpubox stop {spec.name}"
