"""The local provider: this machine, set up like any other box (no ssh, no tunnel).

A name is all a local box has: launch remembers it, terminate forgets it. This
machine is always running as far as gpubox is concerned, and gpubox will not stop it.
"""

from __future__ import annotations

import getpass
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gpubox.errors import NotFound, NotSupported
from gpubox.providers.base import Box, BoxSpec, BoxState, SshEndpoint
from gpubox.providers.ssh import HostRegistry, forget_client_files

if TYPE_CHECKING:
    from gpubox.config import Settings


class LocalProvider:
    name = "local"

    def __init__(self, settings: Settings, on_progress: Callable[[str], None] | None = None):
        self.settings = settings
        self.registry = HostRegistry(settings.data_dir / "local.json")

    def _box(self, name: str, record: dict[str, Any]) -> Box:
        return Box(
            name=name,
            provider=self.name,
            state=BoxState.RUNNING,
            type="this machine",
            address="localhost",
            id="localhost",
            created_at=record.get("added_at"),
            price_per_hour=record.get("price_per_hour"),
        )

    def launch(self, spec: BoxSpec) -> Box:
        record = self.registry.get(spec.name)
        if record is None:
            record = {"added_at": time.time()}
            self.registry.put(spec.name, record)
        return self._box(spec.name, record)

    def find(self, name: str) -> Box | None:
        record = self.registry.get(name)
        return self._box(name, record) if record is not None else None

    def list(self) -> list[Box]:
        return [self._box(name, rec) for name, rec in sorted(self.registry.load().items())]

    def stop(self, box: Box) -> Box:
        raise NotSupported(
            f"gpubox does not stop this machine ('{box.name}' is the local box)",
            hint=f"stop its Jupyter with `gpubox jupyter {box.name} --stop`, "
            f"or `gpubox down {box.name}` to forget it",
        )

    def start(self, box: Box) -> Box:
        raise NotSupported(
            f"the local box '{box.name}' is this machine, which is already running",
            hint=f"`gpubox jupyter {box.name}` opens its Jupyter",
        )

    def terminate(self, box: Box) -> None:
        """Forget the name (and its token); nothing on this machine is deleted."""
        self.registry.remove(box.name)
        forget_client_files(self.settings, box.name)

    def set_price(self, box: Box, price_per_hour: float | None) -> Box:
        """What this machine costs you, $/h (0: free; None: unknown); kept with its name."""
        record = self.registry.update(box.name, price_per_hour=price_per_hour)
        if record is None:
            raise NotFound(f"no local box called '{box.name}'")
        return self._box(box.name, record)

    def endpoint(self, box: Box) -> SshEndpoint:
        if self.registry.get(box.name) is None:
            raise NotFound(f"no local box called '{box.name}'")
        return SshEndpoint(host="localhost", user=getpass.getuser(), local=True)
