"""`gpubox forward` as a user runs it: the real command, a real sshd, and a real HTTP
server on the far side's loopback (this machine's, since the far side is a local sshd)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time

import pytest
import requests

from gpubox.remote.ssh import close_master
from gpubox.remote.tunnel import free_local_port
from tests.remote.farbox import add_box, gpubox

pytestmark = [
    pytest.mark.sshd,
    pytest.mark.skipif(not os.path.exists("/usr/sbin/sshd"), reason="needs openssh-server"),
]

FORWARD_RE = re.compile(r"http://127\.0\.0\.1:(\d+) → port (\d+) on the box")


@pytest.fixture
def web(tmp_path):
    """python -m http.server on 127.0.0.1 (the box's loopback), serving a file only it has."""
    root = tmp_path / "site"
    root.mkdir()
    (root / "hello.txt").write_text("from the far side\n")
    port = free_local_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
         "--directory", str(root)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.05)
    yield port
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def box(far, settings):
    provider, made = add_box(settings, far)
    endpoint = provider.endpoint(made)
    yield made
    gpubox("forward", "b1", "--stop")
    close_master(endpoint, settings, "b1")


def test_forward_reaches_a_far_http_server_is_listed_reused_and_stopped(box, web, settings):
    opened = gpubox("forward", "b1", str(web))
    assert opened.returncode == 0, opened.stderr
    local, remote = map(int, FORWARD_RE.search(opened.stdout).groups())
    # the same local port is taken (the server itself listens there): a free one near it
    assert remote == web and local != web
    answer = requests.get(f"http://127.0.0.1:{local}/hello.txt", timeout=10)
    assert answer.text == "from the far side\n"

    again = gpubox("forward", "b1", str(web))
    assert again.returncode == 0 and "(already open)" in again.stdout
    assert f"127.0.0.1:{local} " in again.stdout

    status = gpubox("status", "b1")
    assert f"b1: forward http://127.0.0.1:{local} → port {web} on the box" in status.stdout
    listed = json.loads(gpubox("status", "b1", "--json").stdout)
    assert listed[0]["forwards"][0]["local_port"] == local
    config = settings.ssh_config_path.read_text()
    assert f"    LocalForward 127.0.0.1:{local} localhost:{web}\n" in config

    stopped = gpubox("forward", "b1", "--stop")
    assert stopped.returncode == 0 and "closed 1 forward" in stopped.stderr
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{local}/hello.txt", timeout=5)
    assert "LocalForward" not in settings.ssh_config_path.read_text()


def test_a_given_local_port_and_down_closes_it(box, web, settings):
    local = free_local_port()
    opened = gpubox("forward", "b1", f"{local}:{web}")
    assert opened.returncode == 0, opened.stderr
    assert requests.get(f"http://127.0.0.1:{local}/hello.txt", timeout=10).ok
    down = gpubox("down", "b1")
    assert down.returncode == 0, down.stderr
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{local}/hello.txt", timeout=5)


def test_a_taken_local_port_is_an_error_naming_another(box, web):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = gpubox("forward", "b1", f"{port}:{web}")
    assert done.returncode == 2
    assert f"local port {port} is already in use" in done.stderr
    suggested = re.search(r"gpubox forward b1 (\d+):(\d+)", done.stderr)
    assert suggested and int(suggested.group(2)) == web and int(suggested.group(1)) != port
    assert "Traceback" not in done.stderr


def test_bad_port_spec_is_one_error_line(box):
    done = gpubox("forward", "b1", "tensorboard")
    assert done.returncode == 2 and "bad port in 'tensorboard'" in done.stderr


def test_up_forward_opens_it_with_the_box(far, web, settings):
    host = f"{far.user}@127.0.0.1:{far.port}"
    local = free_local_port()
    try:
        up = gpubox("up", "b3", "--host", host, "--key", str(far.key_path), "--no-setup",
                    "--forward", f"{local}:{web}")
        assert up.returncode == 0, up.stderr
        assert f"forward: http://127.0.0.1:{local} → port {web} on the box" in up.stdout
        assert requests.get(f"http://127.0.0.1:{local}/hello.txt", timeout=10).ok
    finally:
        assert gpubox("down", "b3").returncode == 0


def test_local_forward_lines_survive_a_rewrite_of_the_entry(settings):
    from gpubox.providers.base import SshEndpoint
    from gpubox.remote.ssh_config import set_local_forwards, update_ssh_config, write_ssh_config

    endpoint = SshEndpoint(host="203.0.113.7", user="ubuntu")
    update_ssh_config(settings, "g1", endpoint)
    set_local_forwards(settings, "g1", [(16006, 6006), (8000, 8080)])
    moved = SshEndpoint(host="203.0.113.8", user="ubuntu")
    update_ssh_config(settings, "g1", moved)  # `start` gave it a new address
    write_ssh_config(settings, [("g1", moved)])  # `gpubox ssh-config`
    text = settings.ssh_config_path.read_text()
    assert "HostName 203.0.113.8" in text
    assert text.count("    LocalForward 127.0.0.1:16006 localhost:6006\n") == 1
    assert text.count("    LocalForward 127.0.0.1:8000 localhost:8080\n") == 1
    set_local_forwards(settings, "g1", [])
    assert "LocalForward" not in settings.ssh_config_path.read_text()
