"""The whole life of an ssh box through the real `gpubox` command.

A real sshd on 127.0.0.1 is the "host"; it gives every session a HOME of the test's own
(sshd's SetEnv), so the real bootstrap writes only there. The CLI runs as a subprocess:
`up` (host key pinned on first use, bootstrap, Jupyter, tunnel), `status`, `up` again
(nothing redone, the tunnel reused), `ssh`, `stop` (refused: gpubox does not own the
host), `down` (Jupyter on the host and the tunnel end, the host's files stay).
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import requests

from tests.cli.farhost import URL_RE, far_host
from tests.test_bootstrap import TORCH_WHEEL

pytestmark = [
    pytest.mark.sshd,
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists("/usr/sbin/sshd"), reason="needs Debian's openssh-server"),
    pytest.mark.skipif(not TORCH_WHEEL.is_file(), reason="needs the torch CPU wheel in /opt/wheels"),
]


def test_up_status_again_ssh_stop_down_on_an_ssh_host(tmp_path):
    with far_host(tmp_path, box="far") as far_side:
        server, far_home, gpubox = far_side.server, far_side.home, far_side.gpubox
        # An ssh-only user has no AWS credentials: with them, `status` would ask AWS too.
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                     "AWS_SECURITY_TOKEN"):  # fmt: skip
            far_side.env.pop(name, None)
        host = f"root@127.0.0.1:{server.port}"
        up = gpubox("up", "far", "--host", host, "--key", str(server.key_path), "--no-browser")
        assert up.returncode == 0, up.stderr
        assert "SHA256:" in up.stderr  # the pinned host key's fingerprint, said once
        url = URL_RE.search(up.stdout).group(1)
        base, token = url.split("/lab?token=")
        answer = requests.get(f"{base}/api/status", timeout=10,
                              headers={"Authorization": f"token {token}"})
        assert answer.status_code == 200

        listed = json.loads(gpubox("status", "--json", "--refresh").stdout)
        assert [(b["name"], b["provider"], b["state"]) for b in listed] == [
            ("far", "ssh", "running")
        ]

        again = gpubox("up", "far", "--no-browser", "--host", host,
                       "--key", str(server.key_path))
        assert again.returncode == 0, again.stderr
        assert f"Jupyter: {url}" in again.stdout  # the same live tunnel
        assert "✓ jupyter" not in again.stderr  # every step skipped

        far = gpubox("ssh", "far", "--", "echo", "$HOME")
        assert far.stdout.strip() == str(far_home)
        # Plain ssh with gpubox's config (what `ssh-config --install` includes) works too.
        ssh_config = tmp_path / "gpubox-home" / "data" / "ssh_config"
        plain = subprocess.run(["ssh", "-F", str(ssh_config), "-o", "BatchMode=yes", "far",
                                "echo", "plain"], capture_output=True, text=True, timeout=60)
        assert plain.stdout.strip() == "plain", plain.stderr

        stop = gpubox("stop", "far")
        assert stop.returncode != 0 and "cannot stop a host it does not own" in stop.stderr
        assert "Traceback" not in stop.stderr

        down = gpubox("down", "far")
        assert down.returncode == 0, down.stderr
        assert not (far_home / ".gpubox/state/jupyter.pid").exists()
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{base}/api/status", timeout=5)
        assert (far_home / ".gpubox/venv").is_dir() and (far_home / "d2l").is_dir()
        assert json.loads(gpubox("status", "--json", "--refresh").stdout) == []
        assert "Host far" not in ssh_config.read_text()
