"""Jupyter, client side: the token, the tunnel, the URL.

The server runs on the box bound to its own 127.0.0.1 (the bootstrap starts it with
the token made here), so it is never exposed on a public port; gpubox reaches it
through an SSH tunnel to a free local port and prints the right URL, token included.
Its port on the box is the setting jupyter_port when set; else 8888, or the free port
the bootstrap chose when another program held 8888: setup reports it and it is kept
here (`jupyter_port.NAME` in the state) for `gpubox jupyter NAME` and later runs.
The token is made on this machine, kept with owner-only permissions, and reaches the
host over ssh's stdin, never on a command line other users could read in `ps`.
"""

from __future__ import annotations

import os
import secrets
import shlex
import sys
import time
from typing import TYPE_CHECKING

from gpubox.errors import GpuboxError, NotFound

if TYPE_CHECKING:
    from gpubox.config import Settings
    from gpubox.providers.base import Box, SshEndpoint
    from gpubox.remote.runner import Runner
    from gpubox.state import State

# Asks the server on the host for /api/status; prints the HTTP code (000: no answer).
_PY_STATUS = """import os, urllib.request as u, urllib.error as e
r = u.Request(os.environ["URL"], headers={"Authorization": "token " + os.environ["T"]})
try:
    print(u.urlopen(r, timeout=5).status)
except e.HTTPError as x:
    print(x.code)
except Exception:
    print("000")
"""


def token_path(settings: Settings, name: str):
    return settings.data_dir / "tokens" / name


def token_for(settings: Settings, name: str, create: bool = True) -> str:
    """The box's Jupyter token, made (0600) on first use when `create`."""
    from gpubox.localfiles import cannot, private_dir, read_text

    path = token_path(settings, name)
    text = read_text(path)  # a tokens folder that cannot be read: one error naming it
    if text is None:
        if not create:
            raise NotFound(
                f"box '{name}' has no Jupyter token here",
                hint=f"`gpubox up {name}` sets Jupyter up on it (done steps are skipped)",
            )
        private_dir(path.parent)
        text = secrets.token_hex(24) + "\n"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # made by a concurrent gpubox: use that one
            text = read_text(path) or ""
        except OSError as exc:
            raise cannot("write", path, exc) from None
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
    return text.strip()


def has_token(settings: Settings, name: str) -> bool:
    """Whether this machine keeps a Jupyter token for the box (it was set up from here)."""
    from gpubox.localfiles import is_file

    return is_file(token_path(settings, name))


def forget_token(settings: Settings, name: str) -> bool:
    from gpubox.localfiles import cannot

    path = token_path(settings, name)
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    except OSError as exc:  # e.g. a tokens folder that cannot be read
        raise cannot("remove", path, exc) from None
    return True


def _port_key(name: str) -> str:
    return f"jupyter_port.{name}"


def remember_port(state: State, name: str, port: int) -> None:
    """The port the box's Jupyter listens on, on the box (setup says which)."""
    state.put(_port_key(name), str(port))


def box_port(settings: Settings, state: State, name: str) -> int:
    """Where the box's Jupyter listens on the box: the port setup reported last, else the
    setting, else 8888."""
    from gpubox.setup import DEFAULT_JUPYTER_PORT

    kept = state.get(_port_key(name)) or ""
    if kept.isdigit():
        return int(kept)
    return settings.jupyter_port or DEFAULT_JUPYTER_PORT


def forget_port(state: State, name: str) -> None:
    state.put(_port_key(name), "")


def jupyter_url(local_port: int, token: str) -> str:
    return f"http://127.0.0.1:{local_port}/lab?token={token}"


def api_status(local_port: int, token: str | None, timeout: float = 5) -> int:
    """HTTP code of /api/status on 127.0.0.1:local_port (0 when nothing answers)."""
    import urllib.error
    import urllib.request

    headers = {"Authorization": f"token {token}"} if token else {}
    request = urllib.request.Request(f"http://127.0.0.1:{local_port}/api/status", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def status_on_host(runner: Runner, port: int, token: str) -> int:
    """HTTP code of the server's /api/status, asked on the host itself (0: no answer)."""
    url = f"http://127.0.0.1:{port}/api/status"
    command = (
        f"read -r T; export T URL={shlex.quote(url)}; "
        "if command -v curl >/dev/null 2>&1; then "
        'curl -s -o /dev/null -m 5 -w "%{http_code}" -H "Authorization: token $T" "$URL"; '
        f"else python3 -c {shlex.quote(_PY_STATUS)}; fi"
    )
    result = runner.run(command, input=token + "\n", check=False, timeout=30)
    text = result.stdout.strip()
    return int(text) if text.isdigit() else 0


def _not_answering(name: str, port: int, code: int) -> GpuboxError:
    if code == 403:
        return GpuboxError(
            f"Jupyter on '{name}' (port {port} on the box) does not accept gpubox's token",
            hint=f"`gpubox up {name}` starts it again with the token gpubox keeps",
        )
    return GpuboxError(
        f"Jupyter is not answering on '{name}' (127.0.0.1:{port} on the box"
        + (f", HTTP {code})" if code else ")"),
        hint=f"`gpubox up {name}` starts it again (done steps are skipped); "
        "its log is under ~/.gpubox/logs/ on the box",
    )


def _can_open_browser() -> bool:
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def open_jupyter(
    settings: Settings,
    state: State,
    box: Box,
    endpoint: SshEndpoint,
    *,
    local_port: int | None = None,
    browser: bool = True,
    remote_port: int | None = None,
) -> str:
    """Make sure Jupyter answers, tunnel to it (reusing a live tunnel), return its URL.
    remote_port: its port on the box, as setup just reported it (then remembered);
    default: the one remembered (box_port)."""
    from gpubox.remote import tunnel as tunnels
    from gpubox.remote.ssh import runner_for

    name = box.name
    token = token_for(settings, name, create=False)
    if remote_port is None:
        remote_port = box_port(settings, state, name)
    else:
        remember_port(state, name, remote_port)
    if endpoint.local:
        code = api_status(remote_port, token)
        if code != 200:
            raise _not_answering(name, remote_port, code)
        url = jupyter_url(remote_port, token)
    else:
        code = status_on_host(runner_for(endpoint, settings, name), remote_port, token)
        if code != 200:
            raise _not_answering(name, remote_port, code)
        url = _reuse_tunnel(state, name, local_port, token)
        if url is None:
            opened = tunnels.open_tunnel(endpoint, settings, name, remote_port, local_port)
            code = 0
            for _ in range(20):  # the forward is up; its first request may still be in flight
                code = api_status(opened.local_port, token)
                if code == 200:
                    break
                time.sleep(0.1)
            if code != 200:
                tunnels.close_tunnel(opened.pid)  # nothing half-made
                raise GpuboxError(
                    f"Jupyter on '{name}' answers on the box but not through the tunnel "
                    f"(HTTP {code or 'no answer'})",
                    hint=f"the tunnel's log is in {settings.log_dir / f'tunnel-{name}.log'}",
                )
            url = jupyter_url(opened.local_port, token)
            state.save_tunnel(name, opened.local_port, opened.pid, url)
    if browser and _can_open_browser():
        import webbrowser

        webbrowser.open(url, new=2)
    return url


def _reuse_tunnel(state: State, name: str, local_port: int | None, token: str) -> str | None:
    from gpubox.remote import tunnel as tunnels

    saved = state.tunnel(name)
    if saved is None:
        return None
    alive = tunnels.tunnel_alive(saved["pid"], saved["local_port"])
    # Reused only when it still reaches this box's Jupyter (which may have moved to
    # another port on the box since the tunnel was opened).
    if (alive and local_port in (None, saved["local_port"])
            and api_status(saved["local_port"], token) == 200):
        return jupyter_url(saved["local_port"], token)  # the cache keeps no token
    if alive:  # another local port asked for, or a stale forward: open it anew
        tunnels.close_tunnel(saved["pid"])
    state.drop_tunnel(name)
    return None


def close_jupyter(settings: Settings, state: State, name: str) -> bool:
    """Close the box's tunnel (the server on the box keeps running); False if there was none."""
    from gpubox.remote import tunnel as tunnels

    saved = state.tunnel(name)
    if saved is None:
        return False
    closed = tunnels.close_tunnel(saved["pid"])
    state.drop_tunnel(name)
    return closed
