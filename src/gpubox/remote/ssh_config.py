"""An ssh config file for gpubox's boxes, so plain `ssh NAME` (and editors' remote
plugins) reach them with the same strict, pinned host key as `gpubox ssh NAME`.

gpubox writes only its own file (settings.ssh_config_path). The user's ~/.ssh/config is
touched once, with consent, to `Include` it, after a backup.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from gpubox.errors import ConfirmationRequired
from gpubox.remote.ssh_options import host_key_alias

if TYPE_CHECKING:
    from gpubox.config import Settings
    from gpubox.providers.base import SshEndpoint

HEADER = "# Written by gpubox (`gpubox ssh-config`); edits are overwritten.\n"


def _quote(value: object) -> str:
    text = str(value)
    return f'"{text}"' if any(c.isspace() for c in text) else text


def ssh_config_text(settings: Settings, boxes: Iterable[tuple[str, SshEndpoint]]) -> str:
    blocks = [HEADER]
    for name, endpoint in sorted(boxes, key=lambda item: item[0]):
        if endpoint.local:
            continue  # this machine needs no ssh
        lines = [
            f"Host {name} {host_key_alias(name)}",
            f"    HostName {endpoint.host}",
            f"    Port {endpoint.port}",
            f"    User {endpoint.user}",
            f"    UserKnownHostsFile {_quote(settings.known_hosts_path)}",
            f"    HostKeyAlias {host_key_alias(name)}",
            "    StrictHostKeyChecking yes",
        ]
        if endpoint.key_path is not None:
            lines += [f"    IdentityFile {_quote(endpoint.key_path)}", "    IdentitiesOnly yes"]
        if endpoint.proxy_jump:
            lines.append(f"    ProxyJump {endpoint.proxy_jump}")
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


def write_ssh_config(settings: Settings, boxes: Iterable[tuple[str, SshEndpoint]]) -> Path:
    """Write settings.ssh_config_path with a Host entry per (name, endpoint), atomically."""
    new = _blocks(ssh_config_text(settings, boxes))

    def keep_forwards(old: dict[str, str]) -> dict[str, str]:
        return {name: block + _forward_lines(old.get(name, "")) for name, block in new.items()}

    _rewrite(settings.ssh_config_path, keep_forwards, always=True)
    return settings.ssh_config_path


def _forward_lines(block: str) -> str:
    """The LocalForward lines of a Host block (`gpubox forward` keeps them across rewrites)."""
    return "".join(line + "\n" for line in block.splitlines()
                   if line.strip().startswith("LocalForward "))


def set_local_forwards(settings: Settings, name: str, pairs: Iterable[tuple[int, int]]) -> None:
    """Give the box's entry a `LocalForward 127.0.0.1:LOCAL localhost:REMOTE` per pair,
    so plain `ssh NAME` opens the same forwards as `gpubox forward NAME`."""
    pairs = list(pairs)

    def with_forwards(blocks: dict[str, str]) -> dict[str, str] | None:
        if name not in blocks:
            return None
        kept = [line for line in blocks[name].splitlines()
                if not line.strip().startswith("LocalForward ")]  # fmt: skip
        kept += [f"    LocalForward 127.0.0.1:{local} localhost:{remote}" for local, remote in pairs]
        return {**blocks, name: "\n".join(kept) + "\n"}

    _rewrite(settings.ssh_config_path, with_forwards)


def _text(blocks: dict[str, str]) -> str:
    """The file: the header, then the Host blocks sorted by box name."""
    return HEADER + "".join("\n" + blocks[key] for key in sorted(blocks))


def _rewrite(
    path: Path, change: Callable[[dict[str, str]], dict[str, str] | None], always: bool = False
) -> bool:
    """Read-modify-write of gpubox's ssh config under its lock: `change` gets the Host
    blocks by name and returns the new ones (None: leave the file alone). The file is
    replaced atomically, owner-only, when its text changes (or `always`); True then."""
    from gpubox.localfiles import locked, read_text, write_private

    with locked(path):
        old = read_text(path)
        blocks = change(_blocks(old or ""))
        if blocks is None:
            return False
        text = _text(blocks)
        if text == old and not always:
            return False
        write_private(path, text)
    return True


def include_line(settings: Settings) -> str:
    return f"Include {_quote(settings.ssh_config_path)}"


def include_in_user_config(
    settings: Settings, consent: bool, user_ssh_dir: Path | None = None
) -> bool:
    """Put `Include <gpubox's config>` at the top of ~/.ssh/config, once.

    At the top because ssh takes the first value it reads, and an Include below a
    `Host` line would apply only inside that block. The old file is backed up first.
    True when the file was changed, False when the Include was already there.
    """
    ssh_dir = user_ssh_dir or Path.home() / ".ssh"
    config = ssh_dir / "config"
    line = include_line(settings)
    old = config.read_text() if config.is_file() else ""
    if any(existing.strip() == line for existing in old.splitlines()):
        return False  # (the user's file: read and replaced whole, after a backup)
    if not consent:
        raise ConfirmationRequired(
            f"adding `{line}` to {config} needs your yes",
            hint="run `gpubox ssh-config --install` on a terminal, or add --yes",
        )
    ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = 0o600
    if config.is_file():
        mode = config.stat().st_mode & 0o777
        shutil.copy2(config, config.with_name(f"config.gpubox-backup-{time.strftime('%Y%m%d%H%M%S')}"))
    from gpubox.localfiles import write_private

    write_private(config, f"# added by gpubox: its boxes as ssh hosts\n{line}\n\n{old}", mode)
    return True


def _blocks(text: str) -> dict[str, str]:
    """The Host blocks of a file this module wrote, by box name."""
    found: dict[str, str] = {}
    for block in text.split("\n\n"):
        block = block.strip("\n")
        if block.startswith("Host "):
            found[block.split()[1]] = block + "\n"
    return found


def update_ssh_config(
    settings: Settings, name: str, endpoint: SshEndpoint | None, only_if_present: bool = False
) -> bool:
    """Add or replace one box's entry (None removes it), keeping the others; True when
    the file changed. Under a lock: parallel `up`/`down` of other boxes lose nothing.

    `up`, `start` (an AWS box's address changes) and `down` call this, so plain
    `ssh NAME` follows the box without running `gpubox ssh-config` again."""

    def with_entry(blocks: dict[str, str]) -> dict[str, str] | None:
        had = blocks.pop(name, None)
        if only_if_present and had is None:
            return None
        if endpoint is not None and not endpoint.local:
            blocks.update(_blocks(ssh_config_text(settings, [(name, endpoint)])))
            if had and name in blocks:  # `gpubox forward`'s LocalForward lines stay
                blocks[name] += _forward_lines(had)
        return blocks

    return _rewrite(settings.ssh_config_path, with_entry)


def has_entry(settings: Settings, name: str) -> bool:
    from gpubox.localfiles import read_text

    return name in _blocks(read_text(settings.ssh_config_path) or "")
