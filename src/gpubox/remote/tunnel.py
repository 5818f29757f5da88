"""Local port forwards to a box, "analogous to OpenSSH's -L": a background `ssh -N -L`.

A tunnel is its own ssh process (not a channel of the shared master connection), so
its PID is the tunnel: killing it closes exactly this forward, and it outlives the
`gpubox` command that opened it. The local end binds 127.0.0.1 only.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gpubox.errors import GpuboxError, InvalidInput
from gpubox.remote.hostkeys import ensure_host_key
from gpubox.remote.ssh_errors import classify_failure
from gpubox.remote.ssh_options import base_options

if TYPE_CHECKING:
    from gpubox.config import Settings
    from gpubox.providers.base import SshEndpoint

UP_TIMEOUT = 20.0


@dataclass(frozen=True)
class Tunnel:
    local_port: int
    pid: int


def free_local_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _process_alive(pid: int) -> bool:
    """True for a live (not zombie) ssh process; a reused PID of another program is not ours."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        try:  # no /proc (macOS): signal 0 is the best we have
            os.kill(pid, 0)
            return True
        except OSError:
            return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state != "Z" and bool(cmdline) and os.path.basename(cmdline[0]) == b"ssh"


def tunnel_alive(pid: int, local_port: int) -> bool:
    return _process_alive(pid) and _listening(local_port)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass  # not our child (opened by an earlier gpubox command): init reaps it


def close_tunnel(pid: int) -> bool:
    """Stop the tunnel process; False when it was already gone."""
    if not _process_alive(pid):
        _reap(pid)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        _reap(pid)
        if not _process_alive(pid):
            return True
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    _reap(pid)
    return True


def open_tunnel(
    endpoint: SshEndpoint,
    settings: Settings,
    name: str,
    remote_port: int,
    local_port: int | None = None,
    label: str = "tunnel",
) -> Tunnel:
    """Forward 127.0.0.1:local_port here to localhost:remote_port on the box; up when it returns.

    `label` names its log (LOG_DIR/LABEL-NAME.log): one per tunnel that lives at once."""
    if local_port is not None and not port_is_free(local_port):
        raise InvalidInput(
            f"local port {local_port} is already in use on this machine",
            hint="pick another with --port, or leave --port out to get a free one",
        )
    ensure_host_key(endpoint, settings, name)
    port = local_port or free_local_port()
    from gpubox.localfiles import open_private

    log_path = settings.log_dir / f"{label}-{name}.log"
    argv = ["ssh", *base_options(endpoint, settings, name, multiplex=False)]
    argv += ["-o", "ExitOnForwardFailure=yes", "-N", "-T"]
    argv += ["-L", f"127.0.0.1:{port}:localhost:{remote_port}"]
    argv += ["-l", endpoint.user, "--", endpoint.host]
    with open_private(log_path) as log:
        # A session of its own: the tunnel outlives this command and its Ctrl-C.
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
    deadline = time.monotonic() + UP_TIMEOUT
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            stderr = log_path.read_text()
            error = classify_failure(stderr, endpoint, settings, name)
            if error is None and "forward" in stderr.lower() and local_port is not None:
                error = InvalidInput(
                    f"local port {local_port} is already in use on this machine",
                    hint="pick another with --port, or leave --port out to get a free one",
                )
            raise error or GpuboxError(
                f"the SSH tunnel to '{name}' closed at once (exit {code})",
                hint=stderr.strip()[-300:] or f"see {log_path}",
            )
        if _listening(port):
            return Tunnel(port, proc.pid)
        time.sleep(0.05)
    close_tunnel(proc.pid)
    raise GpuboxError(
        f"the SSH tunnel to '{name}' did not come up within {UP_TIMEOUT:.0f}s",
        hint=f"see {log_path}",
    )


@contextmanager
def tunnel(
    endpoint: SshEndpoint,
    settings: Settings,
    name: str,
    remote_port: int,
    local_port: int | None = None,
) -> Iterator[Tunnel]:
    """`with tunnel(...) as t:` forwards t.local_port for the block, and closes it after."""
    opened = open_tunnel(endpoint, settings, name, remote_port, local_port)
    try:
        yield opened
    finally:
        close_tunnel(opened.pid)
