"""A real OpenSSH server for tests, on a free 127.0.0.1 port (a pytest plugin).

`sshd` (module scope) is one server with its own host key and a user key made here;
`sshd_factory` (function scope) makes more, e.g. a second server with a different
host key on the same port for the "host key changed" test. Every server is killed by
PID at the end, together with the per-connection children it forked (a multiplexed
client connection otherwise outlives the listener).
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SSHD = "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path, comment: str) -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    path.chmod(0o600)
    return path


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # the ppid is the 2nd field after the ")" that closes the command name
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            kids.append(int(entry.name))
    return kids


@dataclass
class SshdServer:
    root: Path
    port: int
    key_path: Path  # the user's private key, authorized on this server
    host_key_path: Path
    host: str = "127.0.0.1"
    user: str = field(default_factory=getpass.getuser)
    proc: subprocess.Popen | None = None

    @property
    def host_key_line(self) -> str:
        """The server's public host key, `ssh-ed25519 AAAA...` (no comment)."""
        kind, blob = Path(f"{self.host_key_path}.pub").read_text().split()[:2]
        return f"{kind} {blob}"

    @property
    def target(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    def write_known_hosts(self, path: Path, alias: str | None = None) -> Path:
        name = alias or f"[{self.host}]:{self.port}"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as fh:
            fh.write(f"{name} {self.host_key_line}\n")
        return path

    def endpoint(self, **changes):
        from gpubox.providers.base import SshEndpoint

        values = dict(host=self.host, user=self.user, port=self.port, key_path=self.key_path)
        values.update(changes)
        return SshEndpoint(**values)

    def stop(self) -> None:
        if self.proc is None:
            return
        # Per-connection children first: killing the listener leaves them serving.
        for pid in _children(self.proc.pid):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


def start_sshd(
    root: Path,
    *,
    port: int | None = None,
    user_key: Path | None = None,
    session_env: dict[str, str] | None = None,
) -> SshdServer:
    """Start `/usr/sbin/sshd -D -e` under `root` with a fresh host key; wait until it listens.

    session_env: variables sshd sets in every session (its SetEnv); by default a HOME of
    the test's own (root/home), so that a "far side" run as this machine's root (Jupyter,
    IPython's history, the agent) writes only there.
    """
    root.mkdir(parents=True, exist_ok=True)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation dir
    if session_env is None:  # what the far side writes under ~ stays in the test's folder
        (root / "home").mkdir(exist_ok=True)
        session_env = {"HOME": str(root / "home")}
    # The idle agent's login user for the suite (tests/conftest.py), unless set here.
    if os.environ.get("GPUBOX_IDLE_LOGIN_UID"):
        session_env = {"GPUBOX_IDLE_LOGIN_UID": os.environ["GPUBOX_IDLE_LOGIN_UID"], **session_env}
    host_key = keygen(root / "host_ed25519", "test-host")
    if user_key is None:
        user_key = keygen(root / "user_ed25519", "test-user")
    authorized = root / "authorized_keys"
    shutil.copyfile(f"{user_key}.pub", authorized)
    port = port or free_port()
    config = root / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {host_key}",
                f"PidFile {root / 'sshd.pid'}",
                # With a HOME of the test's own, its ~/.ssh/authorized_keys counts too, as
                # on a real host (the idle agent's node reports are authorised there).
                f"AuthorizedKeysFile {authorized}"
                + (f" {session_env['HOME']}/.ssh/authorized_keys" if session_env and "HOME" in session_env else ""),
                "PermitRootLogin prohibit-password",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "StrictModes no",
                "AllowTcpForwarding yes",
                "Subsystem sftp internal-sftp",
                "LogLevel VERBOSE",
                *(
                    ["SetEnv " + " ".join(f"{k}={v}" for k, v in session_env.items())]
                    if session_env
                    else []
                ),
            ]
        )
        + "\n"
    )
    log = (root / "sshd.log").open("ab")
    proc = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=log, stdin=subprocess.DEVNULL
    )
    server = SshdServer(root=root, port=port, key_path=user_key, host_key_path=host_key, proc=proc)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited: {(root / 'sshd.log').read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return server
        except OSError:
            time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"sshd did not listen on {port}: {(root / 'sshd.log').read_text()[-2000:]}")


def _require_sshd() -> None:
    if not Path(SSHD).exists():
        pytest.skip("needs Debian's openssh-server (/usr/sbin/sshd): apt-get install openssh-server")
    if shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        pytest.skip("needs the OpenSSH client (ssh, ssh-keygen)")


@pytest.fixture(scope="module")
def sshd(tmp_path_factory) -> Iterator[SshdServer]:
    """One real sshd for the module: host, port, user, key_path, host_key_line, write_known_hosts."""
    _require_sshd()
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def sshd_factory(tmp_path_factory):
    """Make more servers: `sshd_factory(port=..., user_key=...)`, each with a new host key."""
    _require_sshd()
    started: list[SshdServer] = []

    def make(**kwargs) -> SshdServer:
        server = start_sshd(tmp_path_factory.mktemp("sshd-extra"), **kwargs)
        started.append(server)
        return server

    try:
        yield make
    finally:
        for server in started:
            server.stop()
