"""Host-key pinning: each box's SSH host key, kept in gpubox's own known_hosts.

Keys are pinned per box (`HostKeyAlias=gpubox-NAME`), not per address: an AWS box
gets a new address on every start, and a new address must not mean a new question.
A pin comes from, in order: the pin already there; keys the provider read ahead of
time (an EC2 console); or, failing both, trust on first use, with the fingerprint
told to the user. After that every connection is strict and a changed key is an
error, never silently accepted again.
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gpubox.errors import HostUnreachable, InvalidInput
from gpubox.remote.ssh_errors import classify_failure
from gpubox.remote.ssh_options import base_options, host_key_alias

if TYPE_CHECKING:
    from gpubox.config import Settings
    from gpubox.providers.base import SshEndpoint

# Strongest first; ssh-keyscan returns what the host has of these.
KEY_TYPES = "ed25519,ecdsa,rsa"


@dataclass(frozen=True)
class HostKeyPin:
    alias: str
    keys: tuple[str, ...]  # "ssh-ed25519 AAAA..."
    source: str  # "pinned" (already there) | "given" (from the provider) | "first-use"

    @property
    def fingerprints(self) -> tuple[str, ...]:
        return tuple(fingerprint(k) for k in self.keys)


def fingerprint(key_line: str) -> str:
    """`SHA256:...` as `ssh-keygen -lf` prints it, for a `type base64 [comment]` line."""
    parts = key_line.split()
    if len(parts) < 2:
        raise InvalidInput(f"not an SSH public key: {key_line[:40]!r}")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except ValueError:
        raise InvalidInput(f"not an SSH public key: {key_line[:40]!r}") from None
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def _normalise(key_line: str) -> str:
    parts = key_line.split()
    fingerprint(key_line)  # validates
    return f"{parts[0]} {parts[1]}"


def _read_lines(settings: Settings) -> list[str]:
    from gpubox.localfiles import read_text

    return (read_text(settings.known_hosts_path) or "").splitlines()


def _write_lines(settings: Settings, lines: list[str]) -> None:
    from gpubox.localfiles import write_private

    write_private(settings.known_hosts_path, "".join(line + "\n" for line in lines))


def _locked(settings: Settings):
    """Around a read-modify-write of known_hosts: parallel commands lose no pin."""
    from gpubox.localfiles import locked

    return locked(settings.known_hosts_path)


def pinned_keys(settings: Settings, name: str) -> list[str]:
    alias = host_key_alias(name)
    out = []
    for line in _read_lines(settings):
        parts = line.split()
        if len(parts) >= 3 and alias in parts[0].split(","):
            out.append(f"{parts[1]} {parts[2]}")
    return out


def pin_host_keys(settings: Settings, name: str, keys: Iterable[str]) -> list[str]:
    """Add `keys` to the box's pin (keeping keys already there); the keys now pinned."""
    alias = host_key_alias(name)
    with _locked(settings):
        have = pinned_keys(settings, name)
        new = [k for k in dict.fromkeys(_normalise(k) for k in keys) if k not in have]
        if new:
            _write_lines(settings, _read_lines(settings) + [f"{alias} {k}" for k in new])
    return have + new


def forget_host_key(settings: Settings, name: str) -> list[str]:
    """Remove the box's pin; the key lines that were removed."""
    alias = host_key_alias(name)
    with _locked(settings):
        removed = pinned_keys(settings, name)
        if removed:
            kept = [
                line
                for line in _read_lines(settings)
                if not (line.split() and alias in line.split()[0].split(","))
            ]
            _write_lines(settings, kept)
    return removed


def scan_host_keys(endpoint: SshEndpoint, timeout: float = 10) -> list[str]:
    """The host keys the host shows now (ssh-keyscan); HostUnreachable when none come."""
    argv = ["ssh-keyscan", "-T", str(max(1, int(timeout))), "-p", str(endpoint.port)]
    argv += ["-t", KEY_TYPES, "--", endpoint.host]
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout + 5, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        proc = None
    keys = []
    for line in (proc.stdout if proc else "").splitlines():
        parts = line.split()
        if len(parts) >= 3 and not line.startswith("#"):
            keys.append(f"{parts[1]} {parts[2]}")
    if not keys:
        why = (proc.stderr.strip().splitlines() or ["no answer"])[-1] if proc else "timed out"
        raise HostUnreachable(
            f"cannot reach {endpoint.host}:{endpoint.port} over SSH: {why.strip('# ')}",
            hint="check the host is up, the address and --port, and that sshd listens there",
        )
    return keys


def _trust_through_jump(endpoint: SshEndpoint, settings: Settings, name: str) -> None:
    # ssh-keyscan cannot go through a jump host; let ssh itself record the new key.
    argv = ["ssh", *base_options(endpoint, settings, name, multiplex=False)]
    argv = [a.replace("StrictHostKeyChecking=yes", "StrictHostKeyChecking=accept-new") for a in argv]
    argv += ["-T", "-l", endpoint.user, "--", endpoint.host, "true"]
    proc = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if not pinned_keys(settings, name):
        error = classify_failure(proc.stderr, endpoint, settings, name)
        raise error or HostUnreachable(
            f"could not read the host key of {endpoint.host}:{endpoint.port} "
            f"through {endpoint.proxy_jump}",
            hint=proc.stderr.strip()[-300:] or None,
        )


def ensure_host_key(
    endpoint: SshEndpoint,
    settings: Settings,
    name: str,
    on_message: Callable[[str], None] | None = None,
) -> HostKeyPin:
    """Make sure the box has a pinned host key; say so when it was trusted on first use."""
    alias = host_key_alias(name)
    have = pinned_keys(settings, name)
    if have:
        return HostKeyPin(alias, tuple(have), "pinned")
    if endpoint.host_keys:
        keys = pin_host_keys(settings, name, endpoint.host_keys)
        pin = HostKeyPin(alias, tuple(keys), "given")
        if on_message:
            on_message(f"pinned the host key of '{name}' reported by its provider: "
                       f"{', '.join(pin.fingerprints)}")
        return pin
    if endpoint.proxy_jump:
        _trust_through_jump(endpoint, settings, name)
        keys = pinned_keys(settings, name)
    else:
        keys = pin_host_keys(settings, name, scan_host_keys(endpoint))
    pin = HostKeyPin(alias, tuple(keys), "first-use")
    if on_message:
        on_message(
            f"first connection to '{name}' ({endpoint.host}:{endpoint.port}): trusted its host key "
            f"{pin.fingerprints[0]}; later connections must show the same key"
        )
    return pin
