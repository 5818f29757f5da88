"""Port forwards to a box (`gpubox forward NAME 6006`): TensorBoard and friends.

Each forward is its own background `ssh -N -L` (remote/tunnel.py), from 127.0.0.1
here to the box's loopback, with the life of the Jupyter tunnel: reused while alive,
listed by `status NAME`, closed by `gpubox forward NAME --stop`, `stop` and `down`.
The box's ssh config entry carries them as LocalForward lines for plain `ssh NAME`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from gpubox.errors import InvalidInput

if TYPE_CHECKING:
    from gpubox.config import Settings
    from gpubox.providers.base import SshEndpoint
    from gpubox.state import State


@dataclass(frozen=True)
class Forward:
    local_port: int
    remote_port: int
    pid: int = 0
    reused: bool = False

    def describe(self) -> str:
        return f"http://127.0.0.1:{self.local_port} → port {self.remote_port} on the box"


def _port(text: str, spec: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise InvalidInput(f"bad port in '{spec}'",
                           hint="write PORT (e.g. 6006) or LOCAL:REMOTE (e.g. 8000:8080)")
    return int(text)


def parse_forward(spec: str) -> tuple[int | None, int]:
    """`6006` → (None, 6006): the same local port when free; `8000:8080` → (8000, 8080)."""
    local, sep, remote = spec.strip().rpartition(":")
    if not sep:
        return None, _port(remote, spec)
    return _port(local, spec), _port(remote, spec)


def _free_near(port: int) -> int:
    from gpubox.remote.tunnel import free_local_port, port_is_free

    for candidate in range(port + 1, min(port + 50, 65536)):
        if port_is_free(candidate):
            return candidate
    return free_local_port()


def live_forwards(state: State, name: str) -> list[Forward]:
    """The box's forwards that are up now (dead ones are dropped from the state)."""
    from gpubox.remote.tunnel import tunnel_alive

    alive = []
    for row in state.forwards(name):
        if tunnel_alive(row["pid"], row["local_port"]):
            alive.append(Forward(row["local_port"], row["remote_port"], row["pid"], True))
        else:
            state.drop_forward(name, row["remote_port"])
    return alive


def open_forwards(
    settings: Settings,
    state: State,
    name: str,
    endpoint: SshEndpoint,
    specs: list[str],
) -> list[Forward]:
    """Open (or reuse) a forward per spec; check every local port before opening any."""
    from gpubox.remote import tunnel as tunnels
    from gpubox.remote.ssh_config import set_local_forwards, update_ssh_config

    wanted = [parse_forward(spec) for spec in specs]
    if endpoint.local:
        return [Forward(remote, remote) for _, remote in wanted]  # already here
    live = {f.remote_port: f for f in live_forwards(state, name)}
    plan: list[tuple[int, int, Forward | None]] = []
    for local, remote in wanted:
        current = live.get(remote)
        if current is not None and local in (None, current.local_port):
            plan.append((current.local_port, remote, current))
            continue
        if local is None:
            local = remote if tunnels.port_is_free(remote) else _free_near(remote)
        elif not tunnels.port_is_free(local):
            raise InvalidInput(
                f"local port {local} is already in use on this machine",
                hint=f"use another local port, e.g. `gpubox forward {name} "
                f"{_free_near(local)}:{remote}`",
            )
        plan.append((local, remote, None))
    opened: list[Forward] = []
    for local, remote, current in plan:
        if current is not None:
            opened.append(current)
            continue
        if remote in live:  # moving this forward to another local port
            tunnels.close_tunnel(live[remote].pid)
        made = tunnels.open_tunnel(endpoint, settings, name, remote, local,
                                   label=f"forward{remote}")
        state.save_forward(name, remote, made.local_port, made.pid)
        opened.append(Forward(made.local_port, remote, made.pid))
    every = {f.remote_port: f for f in live_forwards(state, name)}
    update_ssh_config(settings, name, endpoint)  # the entry exists and is current
    set_local_forwards(settings, name, [(f.local_port, r) for r, f in sorted(every.items())])
    return opened


def close_forwards(settings: Settings, state: State, name: str, *, forget: bool = False) -> int:
    """Close the box's forwards; how many were up. `forget` also drops the LocalForward
    lines of its ssh config entry (the user's --stop; `stop` keeps them for next time)."""
    from gpubox.remote.tunnel import close_tunnel

    closed = 0
    for row in state.forwards(name):
        closed += close_tunnel(row["pid"])
        state.drop_forward(name, row["remote_port"])
    if forget:
        from gpubox.remote.ssh_config import set_local_forwards

        set_local_forwards(settings, name, [])
    return closed
