"""Helpers for tests with a box on a real sshd: the real `gpubox` command, an ssh box,
a PATH without a program."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from gpubox.providers.base import BoxSpec
from gpubox.providers.ssh import SshProvider


def gpubox(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gpubox", *args], capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL, env={**os.environ, "COLUMNS": "200", **(env or {})},
    )  # fmt: skip


def path_without(tmp: Path, program: str) -> str:
    """A PATH folder with every program of /usr/bin and /bin but `program` (links)."""
    folder = tmp / "bin"
    folder.mkdir(parents=True, exist_ok=True)
    for source in ("/usr/bin", "/bin"):
        for entry in os.scandir(source):
            if entry.name != program and not os.path.lexists(folder / entry.name):
                (folder / entry.name).symlink_to(entry.path)
    return str(folder)


def add_box(settings, server, name: str = "b1"):
    provider = SshProvider(settings)
    box = provider.launch(BoxSpec(name=name, provider="ssh", key_path=server.key_path,
                                  host=f"{server.user}@127.0.0.1:{server.port}"))
    return provider, box
