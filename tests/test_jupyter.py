"""Jupyter through a real SSH tunnel: a real server started on the far side of a real
sshd, a notebook cell executed there, and headless Chromium rendering JupyterLab.

One module-scoped Jupyter server serves every test here, so the module runs in seconds.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from gpubox import config
from gpubox.errors import GpuboxError, InvalidInput, NotFound
from gpubox.jupyter import (
    api_status,
    close_jupyter,
    open_jupyter,
    status_on_host,
    token_for,
    token_path,
)
from gpubox.providers.base import Box, BoxState, SshEndpoint
from gpubox.remote.ssh import SshRunner, close_master
from gpubox.remote.tunnel import open_tunnel, tunnel, tunnel_alive
from gpubox.state import State
from tests.sshd import free_port

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
NOTEBOOK = "far-side-notebook.ipynb"

pytestmark = pytest.mark.sshd


def _pid_gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.fixture(scope="module")
def far(sshd, tmp_path_factory):
    """A Jupyter server started through SshRunner on the sshd's side, with a secret env var."""
    base = tmp_path_factory.mktemp("far")
    root = base / "notebooks"
    root.mkdir()
    (root / NOTEBOOK).write_text(json.dumps(
        {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    settings = config.load({"GPUBOX_HOME": str(base / "home")})
    token, secret, port = secrets.token_hex(24), secrets.token_hex(8), free_port()
    runner = SshRunner(sshd.endpoint(), settings, "far")
    # No network beyond loopback: no news, no update checks, no extension index.
    command = (
        f"cd {root}; export FAR_SIDE_SECRET={secret}; "
        f"nohup {sys.executable} -m jupyter lab --no-browser --ip 127.0.0.1 --port {port} "
        f"--IdentityProvider.token={token} --allow-root --ServerApp.root_dir={root} "
        "--LabApp.news_url=None --LabApp.extension_manager=readonly "
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate "
        f">{base}/jupyter.log 2>&1 </dev/null & echo $!"
    )
    pid = int(runner.run(command).stdout.strip())
    try:
        deadline = time.monotonic() + 60
        while status_on_host(runner, port, token) != 200:
            assert time.monotonic() < deadline, (base / "jupyter.log").read_text()[-2000:]
            assert not _pid_gone(pid), (base / "jupyter.log").read_text()[-2000:]
            time.sleep(0.3)
        yield dict(settings=settings, runner=runner, token=token, secret=secret, port=port,
                   root=root, endpoint=sshd.endpoint(), pid=pid)
    finally:
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            if _pid_gone(pid):
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)
        close_master(sshd.endpoint(), settings, "far")


@pytest.fixture(scope="module")
def far_tunnel(far):
    with tunnel(far["endpoint"], far["settings"], "far", far["port"]) as t:
        yield t


@pytest.fixture
def box_settings(settings, far):
    """Function-scoped settings pointing at the far server's port, with its token kept here."""
    s = settings.with_overrides(jupyter_port=far["port"])
    path = token_path(s, "jb")
    path.parent.mkdir(parents=True)
    path.write_text(far["token"] + "\n")
    path.chmod(0o600)
    return s


@pytest.fixture
def state(settings):
    st = State(settings.state_path)
    yield st
    for name in ("jb",):
        close_jupyter(settings, st, name)
    st.close()


BOX = Box(name="jb", provider="ssh", state=BoxState.RUNNING)


def test_token_is_made_once_with_owner_only_mode(settings):
    with pytest.raises(NotFound, match="no Jupyter token"):
        token_for(settings, "b1", create=False)
    token = token_for(settings, "b1")
    assert len(token) == 48 and token_for(settings, "b1", create=False) == token
    assert stat.S_IMODE(token_path(settings, "b1").stat().st_mode) == 0o600


def test_status_on_host_accepts_only_the_token(far):
    assert status_on_host(far["runner"], far["port"], far["token"]) == 200
    assert status_on_host(far["runner"], far["port"], "wrong") == 403
    assert status_on_host(far["runner"], free_port(), far["token"]) == 0


def test_open_jupyter_tunnels_reuses_and_closes(far, box_settings, state):
    url = open_jupyter(box_settings, state, BOX, far["endpoint"], browser=False)
    saved = state.tunnel("jb")
    local_port = saved["local_port"]
    assert url == f"http://127.0.0.1:{local_port}/lab?token={far['token']}"
    assert saved["url"] == f"http://127.0.0.1:{local_port}/lab"  # the cache keeps no token
    assert local_port != far["port"]
    assert api_status(local_port, far["token"]) == 200
    assert api_status(local_port, None) == 403
    assert open_jupyter(box_settings, state, BOX, far["endpoint"], browser=False) == url
    assert state.tunnel("jb")["pid"] == saved["pid"]  # the live tunnel was reused
    assert close_jupyter(box_settings, state, "jb")
    assert state.tunnel("jb") is None
    assert not tunnel_alive(saved["pid"], local_port)
    assert api_status(local_port, far["token"]) == 0


def test_a_dead_tunnel_is_replaced(far, box_settings, state):
    open_jupyter(box_settings, state, BOX, far["endpoint"], browser=False)
    first = state.tunnel("jb")
    os.kill(first["pid"], signal.SIGTERM)
    os.waitpid(first["pid"], 0)
    url = open_jupyter(box_settings, state, BOX, far["endpoint"], browser=False)
    second = state.tunnel("jb")
    assert second["pid"] != first["pid"] and url.startswith(second["url"] + "?token=")
    assert api_status(second["local_port"], far["token"]) == 200


def test_asked_for_local_port_that_is_taken_is_a_clear_error(far, box_settings, state):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(InvalidInput, match=f"local port {port} is already in use"):
            open_jupyter(box_settings, state, BOX, far["endpoint"], local_port=port, browser=False)
        with pytest.raises(InvalidInput) as info:
            open_tunnel(far["endpoint"], box_settings, "jb", far["port"], local_port=port)
        assert "--port" in info.value.hint
    assert state.tunnel("jb") is None


def test_asked_for_free_local_port_is_used(far, box_settings, state):
    port = free_port()
    url = open_jupyter(box_settings, state, BOX, far["endpoint"], local_port=port, browser=False)
    assert url.startswith(f"http://127.0.0.1:{port}/lab?token=")


def test_server_not_running_leaves_no_tunnel(far, box_settings, state):
    settings = box_settings.with_overrides(jupyter_port=free_port())
    with pytest.raises(GpuboxError, match="Jupyter is not answering on 'jb'") as info:
        open_jupyter(settings, state, BOX, far["endpoint"], browser=False)
    assert "gpubox up jb" in info.value.hint
    assert state.tunnel("jb") is None


def test_wrong_token_is_named(far, box_settings, state):
    token_path(box_settings, "jb").write_text("not-the-token\n")
    with pytest.raises(GpuboxError, match="does not accept gpubox's token"):
        open_jupyter(box_settings, state, BOX, far["endpoint"], browser=False)
    assert state.tunnel("jb") is None


def test_local_box_url_points_straight_at_the_server(far, box_settings, state):
    local = SshEndpoint(host="localhost", user="me", local=True)
    url = open_jupyter(box_settings, state, BOX, local, browser=False)
    assert url == f"http://127.0.0.1:{far['port']}/lab?token={far['token']}"
    assert state.tunnel("jb") is None


def _execute(port: int, token: str, code: str) -> str:
    """Run `code` in a new kernel over the REST API + websocket; its stdout."""
    import urllib.request

    import websocket

    auth = {"Authorization": f"token {token}"}
    base = f"http://127.0.0.1:{port}/api/kernels"
    req = urllib.request.Request(base, data=b"{}", headers=auth, method="POST")
    kernel_id = json.load(urllib.request.urlopen(req, timeout=30))["id"]
    ws = websocket.create_connection(
        f"ws://127.0.0.1:{port}/api/kernels/{kernel_id}/channels",
        header=[f"Authorization: token {token}"], timeout=60)
    try:
        msg_id, out, replied, idle = uuid.uuid4().hex, "", False, False
        ws.send(json.dumps({
            "header": {"msg_id": msg_id, "username": "test", "session": uuid.uuid4().hex,
                       "msg_type": "execute_request", "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": False,
                        "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
        }))
        while True:
            msg = json.loads(ws.recv())
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "stream":
                out += msg["content"]["text"]
            elif msg["msg_type"] == "error":
                out += "\n".join(msg["content"]["traceback"])
            elif msg["msg_type"] == "execute_reply":
                replied = True
            elif msg["msg_type"] == "status":
                idle = msg["content"]["execution_state"] == "idle"
            # shell and iopub are not ordered: done when both the reply and idle came
            if replied and idle:
                return out
    finally:
        ws.close()
        urllib.request.urlopen(
            urllib.request.Request(f"{base}/{kernel_id}", headers=auth, method="DELETE"),
            timeout=30)


def test_a_notebook_cell_runs_on_the_far_side(far, far_tunnel):
    assert "FAR_SIDE_SECRET" not in os.environ
    out = _execute(far_tunnel.local_port, far["token"],
                   "import os; print(os.environ['FAR_SIDE_SECRET'], sorted(os.listdir('.')))")
    assert far["secret"] in out and NOTEBOOK in out


@pytest.mark.browser
def test_chromium_renders_jupyterlab_through_the_tunnel(far, far_tunnel, tmp_path):
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.skip("needs headless Chromium (/usr/bin/chromium)")
    url = f"http://127.0.0.1:{far_tunnel.local_port}/lab?token={far['token']}"
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "jupyterlab-through-tunnel.png"
    common = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
              "--no-first-run", "--disable-background-networking", "--disable-component-update",
              "--disable-sync", "--disable-dev-shm-usage", "--window-size=1280,800",
              "--virtual-time-budget=15000"]

    def chromium(*extra: str) -> subprocess.CompletedProcess:
        profile = tmp_path / f"profile-{len(extra)}"
        return subprocess.run([*common, f"--user-data-dir={profile}", *extra, url],
                              capture_output=True, text=True, timeout=120,
                              stdin=subprocess.DEVNULL,
                              env={**os.environ, "HOME": str(tmp_path / "browser-home")})

    dom = chromium("--dump-dom").stdout
    assert "<title>JupyterLab</title>" in dom or "jp-LabShell" in dom, dom[:500]
    assert "jp-DirListing" in dom and NOTEBOOK in dom  # the file browser lists the notebook
    chromium(f"--screenshot={shot}")
    assert shot.stat().st_size > 10_000
