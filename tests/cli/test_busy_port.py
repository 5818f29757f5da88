"""`gpubox up` on a host whose Jupyter port is taken by another program.

A real listener holds 127.0.0.1:8888 (Jupyter's default port) on this machine, which is
the host of both boxes here: a local box (`--provider local`, the bootstrap run with a
HOME of the test's own) and an ssh box on the suite's loopback sshd (tests/cli/farhost.py).
The real bootstrap must see the port taken, give Jupyter a free one, and the URL (straight,
or through gpubox's real tunnel) must answer there; `status` and `gpubox jupyter` follow.
A port the setting jupyter_port pins, taken by a listener the test owns, fails the `up`
with one clear error, and `status` says so until an `up` gets through.

Both tests hold 8888, so they run in one xdist group, one after the other. When another
program (another test's Jupyter) holds 8888, they wait for it to let go first: it may let
go while the bootstrap runs.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.cli.farhost import URL_RE, far_host, site_env
from tests.test_bootstrap import REAL_UV_CACHE, TORCH_WHEEL, kill_host_servers, make_site, serve

pytestmark = [
    pytest.mark.slow,
    pytest.mark.xdist_group("jupyter-port-8888"),
    pytest.mark.skipif(not TORCH_WHEEL.is_file(), reason="needs the torch CPU wheel in /opt/wheels"),
]

DEFAULT = 8888
STEP_LINE = re.compile(r"jupyter .*port 8888 on the host is taken by another program, so "
                       r"Jupyter on 127\.0\.0\.1:(\d+)")


@contextlib.contextmanager
def listener(port: int = 0) -> Iterator[int]:
    """A real program listening on 127.0.0.1:port (0: any free one); yields the port.
    While another test's Jupyter holds 8888 (the suite runs in two workers, and a
    bootstrap keeps 8888 when it is free), wait for it to let go: a port someone else
    holds now may be free by the time the bootstrap looks."""
    deadline = time.monotonic() + 240
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do
        while True:
            try:
                sock.bind(("127.0.0.1", port))
                break
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or port == 0:
                    raise
                if time.monotonic() > deadline:
                    pytest.skip(f"port {port} stayed taken by another program for 4 minutes")
                time.sleep(0.5)
        sock.listen()
        yield sock.getsockname()[1]


def answers(url: str) -> int:
    base, token = url.split("/lab?token=")
    return requests.get(f"{base}/api/status", timeout=10,
                        headers={"Authorization": f"token {token}"}).status_code


def port_of(url: str) -> int:
    return int(url.split("/lab?")[0].rsplit(":", 1)[1])


def status_of(run, name: str) -> tuple[dict, str]:
    listed = json.loads(run("status", name, "--json", "--refresh").stdout)
    table = run("status", name, "--cached")
    return listed[0], table.stdout + table.stderr


def check_pinned_port_fails_once(run, name: str, env: dict[str, str], url: str) -> None:
    """`up` with jupyter_port pinned to a port a listener of the test holds: one error,
    `status` says the setup failed at the jupyter step, and the box's Jupyter at `url`
    (on its own port) still answers: the failed `up` stopped nothing."""
    with listener() as taken:
        env["GPUBOX_JUPYTER_PORT"] = str(taken)
        try:
            pinned = run("up", name, "--no-browser")
        finally:
            del env["GPUBOX_JUPYTER_PORT"]
    assert pinned.returncode != 0
    said = pinned.stdout + pinned.stderr
    assert said.count(f"port {taken} on the host is taken by another program") == 1, said
    assert "jupyter_port pins Jupyter to it" in said and "Traceback" not in said
    assert re.search(r"✗ jupyter\s+[0-9.]+s\s*$", pinned.stderr, flags=re.MULTILINE), said
    row, table = status_of(run, name)
    assert row["state"] == "running"
    assert row["setup"].startswith(f"failed at step jupyter: port {taken} on the host is taken")
    assert "running · setup failed at step jupyter" in table, table
    assert f"{name}: setup failed at step jupyter: port {taken}" in " ".join(table.split())
    assert answers(url) == 200


def test_local_box_gets_a_free_port_when_8888_is_taken(tmp_path):
    home = tmp_path / "host-home"
    home.mkdir()
    (tmp_path / "site").mkdir()
    make_site(tmp_path / "site")
    with serve(tmp_path / "site") as base_url, listener(DEFAULT):
        env = {**site_env(base_url), "HOME": str(home), "UV_CACHE_DIR": REAL_UV_CACHE,
               "UV_NATIVE_TLS": "1"}
        del env["GPUBOX_JUPYTER_PORT"]  # unset: 8888, or a free port when it is taken

        def run(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run([sys.executable, "-m", "gpubox", *args], env=env,
                                  capture_output=True, text=True, timeout=600,
                                  stdin=subprocess.DEVNULL)

        try:
            up = run("up", "here", "--provider", "local", "--no-browser")
            assert up.returncode == 0, up.stdout + up.stderr
            moved = STEP_LINE.search(up.stderr)
            assert moved, up.stderr
            url = URL_RE.search(up.stdout).group(1)
            port = port_of(url)
            assert port == int(moved.group(1)) and port != DEFAULT
            assert answers(url) == 200  # a local box: the URL is Jupyter's own port
            assert (home / ".gpubox/state/jupyter-port").read_text() == str(port)

            row, table = status_of(run, "here")
            assert row["state"] == "running" and "setup" not in row
            assert "setup failed" not in table
            opened = run("jupyter", "here", "--no-browser")
            assert opened.returncode == 0 and url in opened.stdout, opened.stderr

            again = run("up", "here", "--no-browser")  # the same port, nothing redone
            assert again.returncode == 0, again.stderr
            assert f"Jupyter: {url}" in again.stdout
            assert "· jupyter" in again.stderr and "✓ jupyter" not in again.stderr

            check_pinned_port_fails_once(run, "here", env, url)
            back = run("up", "here", "--no-browser")  # unpinned again: its own port back
            assert back.returncode == 0, back.stderr
            assert f"Jupyter: {url}" in back.stdout and answers(url) == 200
            row, _ = status_of(run, "here")
            assert "setup" not in row
        finally:
            run("down", "here")
            kill_host_servers(home)


@pytest.mark.sshd
@pytest.mark.skipif(not os.path.exists("/usr/sbin/sshd"), reason="needs Debian's openssh-server")
def test_ssh_box_gets_a_free_port_on_the_host_and_the_tunnel_follows(tmp_path):
    with far_host(tmp_path, box="far") as far_side, listener(DEFAULT):
        server, far_home, run = far_side.server, far_side.home, far_side.gpubox
        del far_side.env["GPUBOX_JUPYTER_PORT"]  # unset: 8888, or a free port when taken
        host = f"root@127.0.0.1:{server.port}"
        up = run("up", "far", "--host", host, "--key", str(server.key_path), "--no-browser")
        assert up.returncode == 0, up.stdout + up.stderr
        moved = STEP_LINE.search(up.stderr)
        assert moved, up.stderr
        on_host = int(moved.group(1))
        assert on_host != DEFAULT
        assert (far_home / ".gpubox/state/jupyter-port").read_text() == str(on_host)
        url = URL_RE.search(up.stdout).group(1)
        assert answers(url) == 200  # through the tunnel, to the port chosen on the host
        tunnel = Path(f"/proc/{_tunnel_pid(tmp_path)}/cmdline").read_bytes().split(b"\0")
        assert f"127.0.0.1:{port_of(url)}:localhost:{on_host}".encode() in tunnel

        row, table = status_of(run, "far")
        assert row["state"] == "running" and "setup" not in row
        assert "setup failed" not in table

        # The tunnel closed, `gpubox jupyter` opens one to the port the box's Jupyter has.
        assert run("jupyter", "far", "--stop").returncode == 0
        opened = run("jupyter", "far", "--no-browser")
        assert opened.returncode == 0, opened.stderr
        url = URL_RE.search("Jupyter: " + opened.stdout.strip()).group(1)
        assert answers(url) == 200

        check_pinned_port_fails_once(run, "far", far_side.env, url)
        back = run("up", "far", "--no-browser")
        assert back.returncode == 0, back.stderr
        assert answers(URL_RE.search(back.stdout).group(1)) == 200
        assert (far_home / ".gpubox/state/jupyter-port").read_text() == str(on_host)
        row, _ = status_of(run, "far")
        assert "setup" not in row
        assert run("down", "far").returncode == 0


def _tunnel_pid(tmp_path: Path) -> int:
    import sqlite3

    db = sqlite3.connect(tmp_path / "gpubox-home" / "data" / "state.sqlite")
    try:
        return db.execute("SELECT pid FROM tunnels WHERE name = 'far'").fetchone()[0]
    finally:
        db.close()
