"""Two hosts with their own addresses, each a network namespace with its own sshd.

Layout (every address is in 10.250.0.0/16 and exists only on links this fixture makes):

    root ns  gpbxr<id> 10.250.9.254 --veth-- gpbx1 10.250.9.1   ns A
    ns A     gpbx0     10.250.7.1   --veth-- gpbx0 10.250.7.2   ns B

The two hosts reach each other over the veth pair directly between them (10.250.7.0/24,
where the nodes talk). This machine reaches them through its veth to A: a route to
10.250.7.0/24 via A, and A (a namespace the fixture made, never the root one) forwards
to B. Nothing forwards or NATs in the root namespace; the route goes with the veth.
The namespaces share the root filesystem, so the same python (and torch) is there.

Asked for with the parameter "python-without-torch" (indirect parametrization), the
hosts' sessions get a PATH whose python is a bare venv of this python (no site-packages
of its own, so no torch, no torchrun) and otherwise only the system folders: a host
whose system Python has no framework, as on a fresh cloud image.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.sshd import SSHD, keygen

NODE_NET = "10.250.7"
LINK_NET = "10.250.9"
NODE_IFACE = "gpbx0"  # the same name in both namespaces (GLOO_SOCKET_IFNAME)


@dataclass
class NetnsHost:
    namespace: str
    address: str
    home: Path
    proc: subprocess.Popen | None = None


@dataclass
class NetnsPair:
    hosts: list[NetnsHost]
    key_path: Path  # the user's private key, authorized on both
    root_link: str
    namespaces: list[str] = field(default_factory=list)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def _sshd_config(root: Path, address: str, key: Path, env: dict[str, str]) -> Path:
    host_key = keygen(root / "host_ed25519", f"host-{address}")
    authorized = root / "authorized_keys"
    shutil.copyfile(f"{key}.pub", authorized)
    config = root / "sshd_config"
    config.write_text("\n".join([
        "Port 22", f"ListenAddress {address}", f"HostKey {host_key}",
        f"PidFile {root / 'sshd.pid'}", f"AuthorizedKeysFile {authorized} {env['HOME']}/.ssh/authorized_keys",
        "PermitRootLogin prohibit-password", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
        "AllowTcpForwarding yes", "Subsystem sftp internal-sftp", "LogLevel VERBOSE",
        "SetEnv " + " ".join(f"{k}={v}" for k, v in env.items()),
    ]) + "\n")
    return config


def _wait_listening(address: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited: {log.read_text()[-2000:]}")
        try:
            with socket.create_connection((address, 22), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"sshd on {address} did not listen: {log.read_text()[-2000:]}")


def _teardown(pair: NetnsPair) -> None:
    for host in pair.hosts:
        if host.proc is not None and host.proc.poll() is None:
            # Kill the sessions it forked first, then the listener (by PID, ours only).
            for pid in _ns_pids(host.namespace):
                if pid != host.proc.pid:
                    _kill(pid)
            host.proc.terminate()
            try:
                host.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                host.proc.kill()
                host.proc.wait()
    _ip("link", "del", pair.root_link, check=False)
    for ns in pair.namespaces:
        _ip("netns", "del", ns, check=False)


def _ns_pids(namespace: str) -> list[int]:
    found = _ip("netns", "pids", namespace, check=False).stdout.split()
    return [int(p) for p in found if p.isdigit()]


def _kill(pid: int) -> None:
    try:
        os.kill(pid, 15)
    except ProcessLookupError:
        pass


SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _session_path(tmp_path: Path, kind: str | None) -> str:
    if kind is None:  # this python (and its torch) first
        return f"{Path(sys.executable).parent}:{SYSTEM_PATH}"
    assert kind == "python-without-torch", kind
    bare = tmp_path / "system-python"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    return f"{bare / 'bin'}:{SYSTEM_PATH}"


@pytest.fixture
def netns_pair(tmp_path, request) -> Iterator[NetnsPair]:
    """Two sshd hosts at 10.250.7.1 and 10.250.7.2 that reach each other directly."""
    if not Path(SSHD).exists() or shutil.which("ip") is None:
        pytest.skip("needs /usr/sbin/sshd (openssh-server) and iproute2's `ip`")
    tag = secrets.token_hex(3)
    names = [f"gpbx-{tag}-a", f"gpbx-{tag}-b"]
    made = _ip("netns", "add", names[0], check=False)
    if made.returncode != 0:
        pytest.skip(f"`ip netns add` is not permitted here: {made.stderr.strip()}")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    key = keygen(tmp_path / "user_ed25519", "test-user")
    pair = NetnsPair(hosts=[], key_path=key, root_link=f"gpbxr{tag}", namespaces=[names[0]])
    try:
        _ip("netns", "add", names[1])
        pair.namespaces.append(names[1])
        a, b = names
        _ip("link", "add", "name", NODE_IFACE, "netns", a, "type", "veth",
            "peer", "name", NODE_IFACE, "netns", b)
        _ip("link", "add", "name", pair.root_link, "type", "veth", "peer", "name", "gpbx1",
            "netns", a)
        _ip("addr", "add", f"{LINK_NET}.254/24", "dev", pair.root_link)
        _ip("link", "set", pair.root_link, "up")
        _ip("-n", a, "addr", "add", f"{LINK_NET}.1/24", "dev", "gpbx1")
        for ns, last in ((a, 1), (b, 2)):
            _ip("-n", ns, "addr", "add", f"{NODE_NET}.{last}/24", "dev", NODE_IFACE)
            for dev in ("lo", NODE_IFACE):
                _ip("-n", ns, "link", "set", dev, "up")
        _ip("-n", a, "link", "set", "gpbx1", "up")
        _ip("route", "add", f"{NODE_NET}.0/24", "via", f"{LINK_NET}.1", "dev", pair.root_link)
        _ip("-n", b, "route", "add", f"{LINK_NET}.0/24", "via", f"{NODE_NET}.1")
        subprocess.run(["ip", "netns", "exec", a, "sysctl", "-qw", "net.ipv4.ip_forward=1"],
                       check=True, capture_output=True)
        path = _session_path(tmp_path, getattr(request, "param", None))
        for ns, last in ((a, 1), (b, 2)):
            root = tmp_path / f"host{last}"
            home = root / "home"
            home.mkdir(parents=True)
            address = f"{NODE_NET}.{last}"
            env = {"HOME": str(home), "PATH": path}
            if os.environ.get("GPUBOX_IDLE_LOGIN_UID"):  # the agent's login user (conftest.py)
                env["GPUBOX_IDLE_LOGIN_UID"] = os.environ["GPUBOX_IDLE_LOGIN_UID"]
            config = _sshd_config(root, address, key, env)
            log = root / "sshd.log"
            with log.open("ab") as fh:
                proc = subprocess.Popen(["ip", "netns", "exec", ns, SSHD, "-D", "-e", "-f",
                                         str(config)], stdout=fh, stderr=fh,
                                        stdin=subprocess.DEVNULL)
            host = NetnsHost(ns, address, home, proc)
            pair.hosts.append(host)
            _wait_listening(address, proc, log)
        yield pair
    finally:
        _teardown(pair)
