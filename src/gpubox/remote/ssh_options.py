"""The options every ssh to a box shares: its host-key alias, the shared connection's
socket and the strict, batch-mode defaults.

The bottom of the SSH layer: it imports nothing else from gpubox.remote, so
hostkeys, ssh_errors and ssh_config (below the runner) and ssh and tunnel (above)
all build on it without importing each other in a circle.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gpubox.config import Settings
    from gpubox.providers.base import SshEndpoint


def host_key_alias(name: str) -> str:
    return f"gpubox-{name}"


CONNECT_TIMEOUT = 10


def control_path(endpoint: SshEndpoint, settings: Settings, name: str) -> str:
    """A short socket path (the limit is 104 bytes) unique to box, address, user and key."""
    folder = Path(tempfile.gettempdir()) / f"gpubox-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    identity = "\0".join(
        str(x)
        for x in (settings.data_dir, name, endpoint.user, endpoint.host, endpoint.port,
                  endpoint.key_path, endpoint.proxy_jump)
    )
    return str(folder / hashlib.sha256(identity.encode()).hexdigest()[:20])


def base_options(
    endpoint: SshEndpoint,
    settings: Settings,
    name: str,
    *,
    multiplex: bool = True,
    batch: bool = True,
    connect_timeout: int = CONNECT_TIMEOUT,
) -> list[str]:
    """ssh options shared by every connection to the box (without destination or command)."""
    opts = {
        "BatchMode": "yes" if batch else "no",
        "StrictHostKeyChecking": "yes",
        "UserKnownHostsFile": str(settings.known_hosts_path),
        "GlobalKnownHostsFile": "/dev/null",
        "HostKeyAlias": host_key_alias(name),
        "ConnectTimeout": str(connect_timeout),
        "ServerAliveInterval": "15",
        "ServerAliveCountMax": "4",
        "LogLevel": "ERROR",
    }
    if multiplex:
        opts.update(
            ControlMaster="auto",
            ControlPath=control_path(endpoint, settings, name),
            ControlPersist="60s",
        )
    else:
        opts.update(ControlMaster="no", ControlPath="none")
    if endpoint.key_path is not None:
        opts["IdentitiesOnly"] = "yes"
    argv: list[str] = []
    for key, value in opts.items():
        argv += ["-o", f"{key}={value}"]
    argv += ["-p", str(endpoint.port)]
    if endpoint.key_path is not None:
        argv += ["-i", str(endpoint.key_path)]
    if endpoint.proxy_jump:
        argv += ["-J", endpoint.proxy_jump]
    return argv
