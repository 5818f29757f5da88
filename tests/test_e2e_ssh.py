"""End to end through real SSH: the real bootstrap over the real sshd, Jupyter on the far
side, reached through gpubox's real tunnel, and one notebook cell executed there.

The sshd user is this machine's root; the bootstrap runs with HOME moved to a temporary
folder by `MovedHome`, which wraps the real SshRunner (it only prefixes `export HOME=...`
and rewrites `~` in copy targets: no behaviour is faked).
"""

from __future__ import annotations

import json
import shlex
import time
import uuid
from pathlib import Path

import pytest

from gpubox import setup
from tests.test_bootstrap import (
    REAL_UV_CACHE,
    TORCH_WHEEL,
    free_port,
    host_settings,
    kill_host_servers,
)

pytestmark = [
    pytest.mark.sshd,
    pytest.mark.slow,
    pytest.mark.skipif(not TORCH_WHEEL.is_file(), reason="needs the torch CPU wheel in /opt/wheels"),
]


class MovedHome:
    """The real SshRunner, with the far side's HOME set to `home` for every command."""

    def __init__(self, inner, home: Path) -> None:
        self.inner = inner
        self.home = str(home)
        # uv's cache (and its TLS setting) of this machine: the moved HOME has neither.
        self.prefix = (
            f"export HOME={shlex.quote(self.home)} UV_CACHE_DIR={shlex.quote(REAL_UV_CACHE)} "
            "UV_NATIVE_TLS=1; "
        )

    def run(self, command, **kwargs):
        return self.inner.run(self.prefix + command, **kwargs)

    def stream(self, command, on_line, **kwargs):
        return self.inner.stream(self.prefix + command, on_line, **kwargs)

    def put(self, local, remote, mode=None):
        if remote.startswith("~/"):
            remote = f"{self.home}/{remote[2:]}"
        return self.inner.put(local, remote, mode)


def process_alive(pid: int) -> bool:
    """Running, not merely a zombie waiting for a parent that never reaps it."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def run_cell(base_url: str, token: str, code: str) -> str:
    """Start a kernel through the tunnel, execute `code`, return its stdout, delete it."""
    import requests
    import websocket

    headers = {"Authorization": f"token {token}"}
    kernel = requests.post(f"{base_url}/api/kernels", headers=headers, timeout=30).json()
    ws = websocket.create_connection(
        f"{base_url.replace('http', 'ws')}/api/kernels/{kernel['id']}/channels",
        header=[f"Authorization: token {token}"], timeout=60,
    )
    msg_id = uuid.uuid4().hex
    ws.send(json.dumps({
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "t",
                   "session": uuid.uuid4().hex, "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell",
        "content": {"code": code, "silent": False, "store_history": False,
                    "user_expressions": {}, "allow_stdin": False},
    }))
    out = []
    replied = idle = False
    try:
        # The reply (shell channel) may come before the output (iopub): the cell is done
        # when both the reply and the kernel's "idle" status for it have come.
        while not (replied and idle):
            msg = json.loads(ws.recv())
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])
            replied = replied or msg["msg_type"] == "execute_reply"
            idle = idle or (msg["msg_type"] == "status"
                            and msg["content"].get("execution_state") == "idle")
    finally:
        ws.close()
        requests.delete(f"{base_url}/api/kernels/{kernel['id']}", headers=headers, timeout=30)
    return "".join(out)


def test_bootstrap_over_ssh_then_a_cell_runs_on_the_far_side_through_the_tunnel(
    sshd, tmp_path, settings
):
    import requests

    from gpubox.remote.ssh import SshRunner
    from gpubox.remote.tunnel import tunnel
    from tests.test_bootstrap import make_site, serve

    far_home = tmp_path / "far-home"
    far_home.mkdir()
    (tmp_path / "site").mkdir()
    make_site(tmp_path / "site")
    remote_port = free_port()
    with serve(tmp_path / "site") as base_url:
        box_settings = host_settings(settings.data_dir.parent, base_url, remote_port)
        inner = SshRunner(sshd.endpoint(), box_settings, "e2e")
        try:
            result = setup.run_setup(MovedHome(inner, far_home), box_settings, box_name="e2e")
            assert result.finished("jupyter").status == "done"
            assert result.device["device"] == "cpu"
            assert result.host.home == str(far_home)
            token = setup.jupyter_token(box_settings, "e2e")
            with tunnel(sshd.endpoint(), box_settings, "e2e", remote_port) as t:
                url = f"http://127.0.0.1:{t.local_port}"
                status = requests.get(f"{url}/api/status", timeout=10,
                                      headers={"Authorization": f"token {token}"})
                assert status.status_code == 200
                printed = run_cell(url, token, "import os, sys; print(os.environ['HOME']); "
                                   "print(sys.executable)")
            home_line, python_line = printed.split()
            assert home_line == str(far_home)
            assert python_line.startswith(f"{far_home}/.gpubox/venv/")

            # `gpubox down` of a host it only forgets: the services end, the files stay.
            pid = int((far_home / ".gpubox/state/jupyter.pid").read_text())
            assert setup.stop_services(MovedHome(inner, far_home)) is True
            assert not (far_home / ".gpubox/state/jupyter.pid").exists()
            for _ in range(50):
                if not process_alive(pid):
                    break
                time.sleep(0.1)
            assert not process_alive(pid)
            assert (far_home / "d2l" / "getting-started.ipynb").is_file() or any(
                (far_home / "d2l").iterdir()
            )
            assert (far_home / ".gpubox/venv/bin/python").exists()
        finally:
            inner.close()
            kill_host_servers(far_home)
