"""The ssh provider: any Linux host the user can already ssh into ("other clouds").

gpubox does not own such a host: it cannot make, stop or start it, only remember it
(a registry file in the data dir) and reach it. `launch` checks the host answers with
the given user and key before remembering anything, so a wrong host, port or key fails
up front and leaves nothing behind. `list` reads only the file (no network: `status`
answers at once); `probe` is the network check.
"""

from __future__ import annotations

import getpass
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpubox.errors import GpuboxError, InvalidInput, NotFound, NotSupported
from gpubox.providers.base import Box, BoxSpec, BoxState, SshEndpoint

if TYPE_CHECKING:
    from gpubox.config import Settings

PROBE_TIMEOUT = 5


class HostRegistry:
    """A small JSON file of name -> record, written atomically (shared with `local`)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, dict[str, Any]]:
        from gpubox.localfiles import read_text

        text = read_text(self.path)
        if text is None:
            return {}
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            raise GpuboxError(
                f"cannot read {self.path}: it is not valid JSON",
                hint="fix it by hand, or remove it to forget the hosts it lists",
            ) from None

    def _save(self, data: dict[str, dict[str, Any]]) -> None:
        from gpubox.localfiles import write_private

        write_private(self.path, json.dumps(data, indent=2, sort_keys=True))

    def get(self, name: str) -> dict[str, Any] | None:
        return self.load().get(name)

    def put(self, name: str, record: dict[str, Any]) -> None:
        from gpubox.localfiles import locked

        with locked(self.path):  # parallel commands on other hosts lose nothing
            data = self.load()
            data[name] = record
            self._save(data)

    def update(self, name: str, **fields: Any) -> dict[str, Any] | None:
        """Change some fields of one record (None removes a field); the new record, or None
        when there is no such name."""
        from gpubox.localfiles import locked

        with locked(self.path):
            data = self.load()
            record = data.get(name)
            if record is None:
                return None
            for key, value in fields.items():
                if value is None:
                    record.pop(key, None)
                else:
                    record[key] = value
            self._save(data)
        return record

    def remove(self, name: str) -> bool:
        from gpubox.localfiles import locked

        with locked(self.path):
            data = self.load()
            if data.pop(name, None) is None:
                return False
            self._save(data)
        return True


def parse_host(text: str, user: str | None = None, port: int | None = None) -> tuple[str, str, int]:
    """`user@host[:port]` (or `[v6addr]:port`) -> (user, host, port); flags win over the text."""
    rest = text.strip()
    given_user = None
    if "@" in rest:
        given_user, rest = rest.rsplit("@", 1)
    given_port: str | None = None
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        given_port = tail[1:] if tail.startswith(":") else None
    elif rest.count(":") == 1:
        host, given_port = rest.split(":")
    else:
        host = rest
    if not host or host.startswith("-") or any(c.isspace() for c in host):
        raise InvalidInput(f"'{text}' is not a host", hint="write it as USER@HOST or USER@HOST:PORT")
    try:
        number = port or int(given_port or 22)
    except ValueError:
        raise InvalidInput(f"'{given_port}' in '{text}' is not a port number") from None
    if not 0 < number < 65536:
        raise InvalidInput(f"port {number} is out of range", hint="ports are 1 to 65535")
    return user or given_user or getpass.getuser(), host, number


def forget_client_files(settings: Settings, name: str) -> None:
    """What gpubox keeps here about a box: its host-key pin and its Jupyter token."""
    from gpubox.jupyter import forget_token
    from gpubox.remote.hostkeys import forget_host_key

    forget_host_key(settings, name)
    forget_token(settings, name)


class SshProvider:
    name = "ssh"

    def __init__(self, settings: Settings, on_progress: Callable[[str], None] | None = None):
        self.settings = settings
        self.on_progress = on_progress
        self.registry = HostRegistry(settings.data_dir / "hosts.json")

    def _box(self, name: str, record: dict[str, Any]) -> Box:
        target = f"{record['user']}@{record['host']}:{record['port']}"
        return Box(
            name=name,
            provider=self.name,
            state=BoxState.RUNNING if record.get("reachable") else BoxState.UNKNOWN,
            type="ssh host",
            address=record["host"],
            id=target,
            created_at=record.get("added_at"),
            price_per_hour=record.get("price_per_hour"),
            extra=tuple(sorted((k, str(v)) for k, v in record.items()
                               if k in ("last_error", "cluster", "node"))),
        )

    def _endpoint(self, record: dict[str, Any]) -> SshEndpoint:
        key = record.get("key_path")
        return SshEndpoint(
            host=record["host"], user=record["user"], port=int(record["port"]),
            key_path=Path(key) if key else None,
        )

    def launch(self, spec: BoxSpec) -> Box:
        from gpubox.remote.hostkeys import forget_host_key, pinned_keys
        from gpubox.remote.ssh import SshRunner, close_master

        if not spec.host:
            raise InvalidInput(
                "the ssh provider needs the host to use",
                hint="pass --host USER@HOST[:PORT] (and --key PATH if ssh needs one)",
            )
        user, host, port = parse_host(spec.host, spec.user, spec.port)
        key = str(Path(spec.key_path).expanduser().resolve()) if spec.key_path else None
        record = {"user": user, "host": host, "port": port, "key_path": key}
        if spec.cluster:  # one node of a multi-node box (cluster.py)
            record.update(cluster=spec.cluster, node=spec.node_rank)
        existing = self.registry.get(spec.name)
        if existing is not None:
            if all(existing.get(k) == v for k, v in record.items()):
                return self._box(spec.name, existing)
            raise InvalidInput(
                f"'{spec.name}' is already the host {self._box(spec.name, existing).id}",
                hint=f"use another name, or `gpubox down {spec.name}` to forget that one first",
            )
        endpoint = self._endpoint(record)
        had_pin = bool(pinned_keys(self.settings, spec.name))
        try:
            SshRunner(endpoint, self.settings, spec.name, on_message=self.on_progress).run(
                "true", timeout=60
            )
        except GpuboxError:
            if not had_pin:  # nothing half-made: no pin for a host we do not keep
                forget_host_key(self.settings, spec.name)
            raise
        finally:
            close_master(endpoint, self.settings, spec.name)
        now = time.time()
        record.update(reachable=True, checked_at=now, added_at=now)
        self.registry.put(spec.name, record)
        return self._box(spec.name, record)

    def find(self, name: str) -> Box | None:
        record = self.registry.get(name)
        return self._box(name, record) if record else None

    def list(self) -> list[Box]:
        return [self._box(name, rec) for name, rec in sorted(self.registry.load().items())]

    def probe(self, box: Box) -> Box:
        """Check over the network whether the host answers now; record and return it."""
        from gpubox.remote.ssh import SshRunner

        record = self._record(box.name)
        try:
            SshRunner(self._endpoint(record), self.settings, box.name,
                      connect_timeout=PROBE_TIMEOUT).run("true", timeout=PROBE_TIMEOUT + 10)
            record.update(reachable=True)
            record.pop("last_error", None)
        except GpuboxError as exc:
            record.update(reachable=False, last_error=exc.message)
        record["checked_at"] = time.time()
        self.registry.put(box.name, record)
        return self._box(box.name, record)

    def _record(self, name: str) -> dict[str, Any]:
        record = self.registry.get(name)
        if record is None:
            raise NotFound(f"no ssh host called '{name}'", hint="`gpubox status` lists your boxes")
        return record

    def stop(self, box: Box) -> Box:
        raise NotSupported(
            f"the ssh provider cannot stop a host it does not own ('{box.name}')",
            hint=f"stop it where you rent it, or `gpubox down {box.name}` to forget it",
        )

    def start(self, box: Box) -> Box:
        raise NotSupported(
            f"the ssh provider cannot start a host it does not own ('{box.name}')",
            hint="start it where you rent it; gpubox reaches it again once it is up",
        )

    def terminate(self, box: Box) -> None:
        """Forget the host here (registry, host-key pin, token); nothing on the host changes."""
        from gpubox.remote.ssh import close_master

        record = self.registry.get(box.name)
        if record is not None:
            close_master(self._endpoint(record), self.settings, box.name)
            self.registry.remove(box.name)
        forget_client_files(self.settings, box.name)

    def set_price(self, box: Box, price_per_hour: float | None) -> Box:
        """What the host costs you, $/h (None: unknown); kept with its record."""
        self._record(box.name)
        return self._box(box.name, self.registry.update(box.name, price_per_hour=price_per_hour))

    def endpoint(self, box: Box) -> SshEndpoint:
        return self._endpoint(self._record(box.name))
