"""ssh's own failures (exit 255) as gpubox errors a person can act on.

ssh says what went wrong only in its stderr; these are the phrases OpenSSH prints
(checked against OpenSSH 9.x) and what each means for the user.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gpubox.errors import AuthenticationFailed, GpuboxError, HostUnreachable
from gpubox.remote.ssh_options import host_key_alias

if TYPE_CHECKING:
    from gpubox.config import Settings
    from gpubox.providers.base import SshEndpoint

UNREACHABLE = (
    ("Connection refused", "connection refused (nothing listens on that port)"),
    ("Connection timed out", "connection timed out"),
    ("Operation timed out", "connection timed out"),
    ("No route to host", "no route to host"),
    ("Network is unreachable", "network is unreachable"),
    ("Could not resolve hostname", "the host name does not resolve"),
    ("Name or service not known", "the host name does not resolve"),
    ("kex_exchange_identification", "the port answered but is not an SSH server (or closed at once)"),
    ("Connection closed by", "the host closed the connection before SSH could start"),
    ("Connection reset by", "the host reset the connection"),
)



def classify_failure(
    stderr: str, endpoint: SshEndpoint, settings: Settings, name: str
) -> GpuboxError | None:
    """The gpubox error for ssh's own failure text, or None when it is not ssh's."""
    where = f"{endpoint.host}:{endpoint.port}"
    key = str(endpoint.key_path) if endpoint.key_path else "your default keys / ssh-agent"
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in stderr or (
        "Host key verification failed" in stderr and "host key is known for" not in stderr
    ):
        return AuthenticationFailed(
            f"the host key of '{name}' ({where}) is not the one gpubox pinned: "
            "someone may be intercepting the connection, or the host was rebuilt",
            hint=f"the pin is in {settings.known_hosts_path} as {host_key_alias(name)}; if you "
            f"know why it changed, run `gpubox ssh {name} --forget-host-key`, then connect again",
        )
    if "host key is known for" in stderr:
        return AuthenticationFailed(
            f"no host key is pinned for '{name}' ({where})",
            hint=f"`gpubox ssh {name}` pins it on the first connection",
        )
    if "UNPROTECTED PRIVATE KEY FILE" in stderr or "bad permissions" in stderr:
        return AuthenticationFailed(
            f"ssh refused to use the key {key}: others can read it",
            hint=f"chmod 600 {key}",
        )
    if "Permission denied" in stderr or "Too many authentication failures" in stderr:
        return AuthenticationFailed(
            f"{endpoint.user}@{where} refused the key {key}",
            hint="pass the private key this host accepts with --key PATH, and the right user "
            "as USER@HOST",
        )
    for marker, reason in UNREACHABLE:
        if marker in stderr:
            return HostUnreachable(
                f"cannot reach {where} over SSH: {reason}",
                hint="check the host is up, its address, the port (--port / USER@HOST:PORT) "
                "and any firewall between here and there",
            )
    return None
