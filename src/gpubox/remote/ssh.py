"""The OpenSSH client as a Runner: run, stream and put over one multiplexed connection.

Every connection is strict about the host key, pinned per box in gpubox's own
known_hosts (see hostkeys.py), batch mode (never a prompt that hangs a script), and
shares one master connection per box (ControlMaster), so the many small commands of a
setup cost one handshake. ssh's own failures (exit 255) become gpubox errors a person
can act on: unreachable, key refused, host key changed.
"""

from __future__ import annotations

import collections
import os
import selectors
import shlex
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from gpubox.errors import HostUnreachable, InvalidInput, RemoteCommandFailed
from gpubox.remote.hostkeys import ensure_host_key, forget_host_key
from gpubox.remote.runner import LocalRunner, Result, Runner, env_prefix, tail
from gpubox.remote.ssh_config import include_in_user_config, write_ssh_config
from gpubox.remote.ssh_errors import classify_failure
from gpubox.remote.ssh_options import CONNECT_TIMEOUT, base_options, control_path

if TYPE_CHECKING:
    from gpubox.config import Settings
    from gpubox.providers.base import SshEndpoint

__all__ = [
    "SshRunner", "runner_for", "ssh_argv", "base_options", "classify_failure",
    "ensure_host_key", "forget_host_key", "wait_until_reachable", "close_master",
    "write_ssh_config", "include_in_user_config",
]

SSH_FAILED = 255  # ssh's own exit code for its own failures


class SshRunner:
    """Runs bash commands on a box with the real OpenSSH client (implements Runner)."""

    def __init__(
        self,
        endpoint: SshEndpoint,
        settings: Settings,
        box_name: str,
        *,
        connect_timeout: int = CONNECT_TIMEOUT,
        on_message: Callable[[str], None] | None = None,
    ) -> None:
        from gpubox.localfiles import is_file

        if endpoint.key_path is not None and not is_file(Path(endpoint.key_path)):
            raise InvalidInput(
                f"the key file {endpoint.key_path} does not exist",
                hint="pass the private key for this host with --key PATH",
            )
        self.endpoint = endpoint
        self.settings = settings
        self.name = box_name
        self.connect_timeout = connect_timeout
        self.on_message = on_message
        self._pinned = False

    def argv(self, command: str, env: Mapping[str, str] | None = None) -> list[str]:
        if not self._pinned:
            ensure_host_key(self.endpoint, self.settings, self.name, self.on_message)
            self._pinned = True
        remote = "bash -c " + shlex.quote(env_prefix(env) + command)
        opts = base_options(
            self.endpoint, self.settings, self.name, connect_timeout=self.connect_timeout
        )
        return ["ssh", *opts, "-T", "-l", self.endpoint.user, "--", self.endpoint.host, remote]

    def _raise_for_ssh(self, exit_code: int, stderr: str) -> None:
        if exit_code == SSH_FAILED:
            error = classify_failure(stderr, self.endpoint, self.settings, self.name)
            if error is not None:
                raise error

    def run(self, command, *, check=True, timeout=None, input=None, env=None) -> Result:
        argv = self.argv(command, env)
        try:
            proc = subprocess.run(
                argv,
                input=input,
                stdin=subprocess.DEVNULL if input is None else None,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            out = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else exc.stdout
            raise RemoteCommandFailed(
                command, -1, tail(out or ""), hint=f"it did not finish within {timeout:.0f}s"
            ) from None
        self._raise_for_ssh(proc.returncode, proc.stderr)
        result = Result(command, proc.returncode, proc.stdout, proc.stderr)
        if check and not result.ok:
            raise RemoteCommandFailed(command, result.exit_code, tail(result.stdout + result.stderr))
        return result

    def stream(self, command, on_line, *, env=None, timeout=None) -> int:
        proc = subprocess.Popen(
            self.argv(command, env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        assert proc.stdout is not None
        deadline = time.monotonic() + timeout if timeout else None
        last: collections.deque[str] = collections.deque(maxlen=40)
        pending = b""
        # Read with a deadline rather than killing from a timer: with a shared master
        # connection the master holds our pipe open until the remote command ends.
        with proc.stdout, selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)
            while True:
                wait = None if deadline is None else deadline - time.monotonic()
                if wait is not None and wait <= 0:
                    proc.kill()
                    proc.wait()
                    raise RemoteCommandFailed(command, -1, "\n".join(last),
                                              hint=f"it did not finish within {timeout:.0f}s")
                if not selector.select(wait):
                    continue
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                *lines, pending = (pending + chunk).split(b"\n")
                for raw in lines:
                    line = raw.decode(errors="replace")
                    last.append(line)
                    on_line(line)
        if pending:
            last.append(pending.decode(errors="replace"))
            on_line(last[-1])
        code = proc.wait()
        self._raise_for_ssh(code, "\n".join(last))
        return code

    def put(self, local: Path, remote: str, mode: int | None = None) -> None:
        target = remote_path(remote)
        chmod = f'chmod {mode:o} "$p.gpubox-tmp"; ' if mode is not None else ""
        command = (
            f'set -e; p={target}; mkdir -p "$(dirname "$p")"; '
            f'cat > "$p.gpubox-tmp"; {chmod}mv -f "$p.gpubox-tmp" "$p"'
        )
        with open(local, "rb") as fh:
            proc = subprocess.run(self.argv(command), stdin=fh, capture_output=True)
        stderr = proc.stderr.decode(errors="replace")
        self._raise_for_ssh(proc.returncode, stderr)
        if proc.returncode != 0:
            raise RemoteCommandFailed(f"copy {local} to {remote}", proc.returncode, tail(stderr))

    def close(self) -> None:
        close_master(self.endpoint, self.settings, self.name)


def remote_path(path: str) -> str:
    """Shell-quoted path with a leading `~` left for the remote shell to expand."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


def close_master(endpoint: SshEndpoint, settings: Settings, name: str) -> None:
    """End the box's shared connection, if one is open (its 60 s linger otherwise)."""
    path = control_path(endpoint, settings, name)
    if not os.path.exists(path):
        return
    argv = ["ssh", "-o", f"ControlPath={path}", "-O", "exit", "-l", endpoint.user, "--",
            endpoint.host]
    subprocess.run(argv, capture_output=True, stdin=subprocess.DEVNULL, timeout=10)


def runner_for(
    endpoint: SshEndpoint,
    settings: Settings,
    name: str,
    on_message: Callable[[str], None] | None = None,
) -> Runner:
    """A LocalRunner for this machine, an SshRunner for anything else."""
    if endpoint.local:
        return LocalRunner()
    return SshRunner(endpoint, settings, name, on_message=on_message)


def ssh_argv(
    endpoint: SshEndpoint,
    settings: Settings,
    name: str,
    command: str | None = None,
    tty: bool = True,
) -> list[str]:
    """The argv of an interactive ssh to the box (for exec), strict about the host key."""
    if endpoint.local:
        return ["bash", "-l"] if command is None else ["bash", "-c", command]
    argv = ["ssh", *base_options(endpoint, settings, name, batch=False)]
    argv += ["-t" if tty else "-T", "-l", endpoint.user, "--", endpoint.host]
    if command is not None:
        argv.append(command)
    return argv


def wait_until_reachable(
    endpoint: SshEndpoint,
    settings: Settings,
    name: str,
    timeout: float = 600,
    on_progress: Callable[[str], None] | None = None,
    *,
    interval: float = 3.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Retry until the box's sshd answers and lets us in; an auth error ends it at once."""
    deadline = clock() + timeout
    where = f"{endpoint.host}:{endpoint.port}"
    attempt = 0
    while True:
        attempt += 1
        try:
            runner = SshRunner(endpoint, settings, name, on_message=on_progress,
                               connect_timeout=int(max(1, min(CONNECT_TIMEOUT, timeout))))
            runner.run("true", timeout=CONNECT_TIMEOUT + 20)
            return
        except HostUnreachable as exc:
            if clock() >= deadline:
                raise HostUnreachable(
                    f"{where} did not answer SSH within {timeout:.0f}s "
                    f"({attempt} tries); last: {exc.message}",
                    hint=exc.hint,
                ) from None
            if on_progress:
                on_progress(f"SSH on {where} does not answer yet (try {attempt}); waiting")
        sleep(max(0.0, min(interval, deadline - clock())))
