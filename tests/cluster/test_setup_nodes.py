"""`gpubox up NAME --host a --host b` WITH setup: the real bootstrap on both hosts at
once, Jupyter on node 0 only, and the nodes' idle guards joined.

Two real sshds on loopback ports, each giving its sessions a HOME of the test's own
(as tests/cli/farhost.py does for one host), the torch CPU wheel and the book's zip
from a site on 127.0.0.1, uv's cache of this machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import requests

from tests.cli.farhost import URL_RE, site_env
from tests.sshd import keygen, start_sshd
from tests.test_bootstrap import (
    REAL_UV_CACHE,
    TORCH_WHEEL,
    kill_host_servers,
    make_site,
    serve,
)

pytestmark = [
    pytest.mark.sshd,
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists("/usr/sbin/sshd"), reason="needs Debian's openssh-server"),
    pytest.mark.skipif(not TORCH_WHEEL.is_file(), reason="needs the torch CPU wheel in /opt/wheels"),
]


def test_up_sets_up_every_node_at_once_with_jupyter_on_node_0_and_joined_guards(tmp_path):
    key = keygen(tmp_path / "user_ed25519", "test-user")
    homes = [tmp_path / "node0", tmp_path / "node1"]
    servers = []
    for index, home in enumerate(homes):
        home.mkdir()
        servers.append(start_sshd(tmp_path / f"sshd{index}", user_key=key, session_env={
            "HOME": str(home), "UV_CACHE_DIR": REAL_UV_CACHE, "UV_NATIVE_TLS": "1"}))
    (tmp_path / "site").mkdir()
    make_site(tmp_path / "site")
    try:
        with serve(tmp_path / "site") as base_url:
            # One Jupyter port for both: on one machine they would clash, were Jupyter on both.
            env = site_env(base_url)
            for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                         "AWS_SECURITY_TOKEN"):  # fmt: skip
                env.pop(name, None)

            def gpubox(*args):
                return subprocess.run([sys.executable, "-m", "gpubox", *args], env=env,
                                      capture_output=True, text=True, timeout=400,
                                      stdin=subprocess.DEVNULL)  # fmt: skip

            hosts = [f"root@127.0.0.1:{s.port}" for s in servers]
            up = gpubox("up", "duo", "--host", hosts[0], "--host", hosts[1], "--key", str(key),
                        "--no-browser")
            assert up.returncode == 0, up.stdout + up.stderr
            assert "node 1 ('duo-1') is set up" in up.stderr
            url = URL_RE.search(up.stdout).group(1)
            base, token = url.split("/lab?token=")
            assert requests.get(f"{base}/api/status", timeout=10,
                                headers={"Authorization": f"token {token}"}).status_code == 200

            # The same environment on both; Jupyter on node 0 only.
            for home in homes:
                done = subprocess.run([str(home / ".gpubox/venv/bin/python"), "-c",
                                       "import torch, d2l; print(torch.__version__)"],
                                      capture_output=True, text=True, timeout=120)  # fmt: skip
                assert done.stdout.startswith("2.13.0"), done.stderr
                assert (home / "d2l").is_dir()
            assert (homes[0] / ".gpubox/state/jupyter.pid").exists()
            assert not (homes[1] / ".gpubox/state/jupyter.pid").exists()
            assert "Jupyter runs on node 0" in (homes[1] / ".gpubox/logs/jupyter.log").read_text()

            # The guards are joined: node 1 reports to node 0 with its own key.
            authorized = (homes[0] / ".ssh/authorized_keys").read_text()
            assert "gpubox-idle-report node 1" in authorized
            check = gpubox("ssh", "duo-1", "--", "python3 ~/.gpubox/agent/idle.py check")
            assert check.returncode == 0, check.stderr
            report = json.loads((homes[0] / ".gpubox/state/peers/node-1.json").read_text())
            assert report["node"] == 1 and report["idle_seconds"] >= 0

            down = gpubox("down", "duo")
            assert down.returncode == 0, down.stderr
            assert not (homes[0] / ".gpubox/state/jupyter.pid").exists()
            assert json.loads(gpubox("status", "--json", "--refresh").stdout) == []
    finally:
        for home in homes:
            kill_host_servers(home)
        for server in servers:
            server.stop()
