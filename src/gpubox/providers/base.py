"""The one seam that matters: where a box lives.

A provider makes, finds, changes and removes boxes, and says how to reach them
over SSH. It knows nothing about Jupyter, frameworks or benchmarks. Frozen
dataclasses cross this seam, never loose dicts.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

# What the library tells a person while it works ("waiting for SSH ..."); the CLI
# turns it into a spinner, a Python user into whatever they like.
Progress = Callable[[str], None]


class BoxState(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    TERMINATED = "terminated"
    UNKNOWN = "unknown"

    @property
    def bills_compute(self) -> bool:
        return self in (BoxState.PENDING, BoxState.RUNNING, BoxState.STOPPING)


@dataclass(frozen=True)
class SshEndpoint:
    """Everything the OpenSSH client needs to reach a box."""

    host: str
    user: str
    port: int = 22
    key_path: Path | None = None
    # Public host keys ("ssh-ed25519 AAAA...") known for this box ahead of the first
    # connection, e.g. read from an EC2 console; pinned instead of trusting on first use.
    host_keys: tuple[str, ...] = ()
    proxy_jump: str | None = None
    # Local boxes are reached without ssh at all.
    local: bool = False

    @property
    def target(self) -> str:
        return f"{self.user}@{self.host}"


@dataclass(frozen=True)
class BoxSpec:
    """What the user asked for. Provider-specific fields are ignored by the others."""

    name: str
    provider: str
    type: str | None = None  # AWS instance type
    region: str | None = None
    disk_gb: int = 64
    image: str | None = None  # dlami | ubuntu | ami-... | saved image name
    spot: bool = False
    max_price: float | None = None
    ssh_from: str | None = None  # CIDR admitted to port 22
    host: str | None = None  # ssh provider: host name or address
    user: str | None = None
    port: int | None = None
    key_path: Path | None = None
    idle_stop_minutes: int | None = 60
    types: tuple[str, ...] = ()  # acceptable types in order of preference (failover)
    any_region: bool = False
    volume: str | None = None  # AWS: "NAME[:GiB]", a data volume that outlives the box
    zone: str | None = None  # AWS: the availability zone to try first (a volume's)
    # Multi-node boxes (cluster.py): node 0's name for every node, and this node's rank.
    cluster: str | None = None
    node_rank: int = 0
    nodes: int = 1  # how many nodes the box has: node 0's preflight checks room for all
    # ssh/local: what the machine costs you, $/h (0 = free); AWS boxes are priced from
    # AWS's price list. Shown by `status`, used by `bench compare`.
    price_per_hour: float | None = None

    def __post_init__(self) -> None:
        from gpubox.validate import check_spec

        check_spec(self)  # every input checked once, here, before anything is made


@dataclass(frozen=True)
class Box:
    """A box as its provider sees it now."""

    name: str
    provider: str
    state: BoxState
    type: str | None = None
    region: str | None = None
    address: str | None = None
    id: str | None = None  # instance id, or user@host for ssh boxes
    launched_at: float | None = None  # epoch seconds of the current run, if running
    created_at: float | None = None
    price_per_hour: float | None = None
    spot: bool = False
    disk_gb: int | None = None
    image_id: str | None = None
    extra: tuple[tuple[str, str], ...] = field(default=())

    def get(self, key: str, default: str | None = None) -> str | None:
        return dict(self.extra).get(key, default)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = self.state.value
        data["extra"] = dict(self.extra)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Box:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["state"] = BoxState(values.get("state", "unknown"))
        values["extra"] = tuple(sorted((values.get("extra") or {}).items()))
        return cls(**values)


@runtime_checkable
class Provider(Protocol):
    name: str

    def launch(self, spec: BoxSpec) -> Box:
        """Make the box, or return the existing one of that name (idempotent per name)."""
        ...

    def find(self, name: str) -> Box | None: ...

    def list(self) -> list[Box]: ...

    def stop(self, box: Box) -> Box: ...

    def start(self, box: Box) -> Box: ...

    def terminate(self, box: Box) -> None: ...

    def endpoint(self, box: Box) -> SshEndpoint: ...
