"""An AWS box from launch to a notebook URL, through the real `gpubox` command.

moto's server (127.0.0.1) plays EC2; the box's address is moto's, which no test may
reach, so the documented `ssh_address` setting (for boxes reached over a VPN or a port
forward) points SSH at a real sshd on a loopback port instead. The key gpubox uses is
one the test made and put in gpubox's key folder: gpubox imports it as the box's key
pair, and the sshd accepts it. Everything after the launch is the real thing: waiting
for SSH, pinning the host key, the bootstrap, Jupyter, the tunnel.
"""

from __future__ import annotations

import json
import os

import pytest
import requests

from tests.cli.farhost import URL_RE, far_host
from tests.providers.aws.moto_seed import seed_images
from tests.sshd import keygen
from tests.test_bootstrap import TORCH_WHEEL

pytestmark = [
    pytest.mark.sshd,
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.exists("/usr/sbin/sshd"), reason="needs Debian's openssh-server"),
    pytest.mark.skipif(not TORCH_WHEEL.is_file(), reason="needs the torch CPU wheel in /opt/wheels"),
]


def test_up_on_aws_launches_sets_up_and_opens_jupyter_then_down_cleans_up(
    moto_server, isolation, tmp_path
):
    import urllib.request

    import boto3

    urllib.request.urlopen(urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST"))
    seed_images("us-east-1")
    keys = isolation / "data" / "keys"
    keys.mkdir(parents=True, mode=0o700)
    key = keygen(keys / "box1.pem", "box1")
    with far_host(tmp_path, user_key=key, box="box1") as far_side:
        far_home, gpubox = far_side.home, far_side.gpubox
        far_side.env.update({
            "AWS_ENDPOINT_URL": moto_server,
            "GPUBOX_SSH_ADDRESS": f"127.0.0.1:{far_side.server.port}",
            "GPUBOX_SSH_USER_AWS": "root",
        })  # fmt: skip
        ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=moto_server)
        # The idle agent is off: on this test host its stop would shut this machine down.
        up = gpubox("up", "box1", "--type", "g4dn.xlarge", "--ssh-from", "203.0.113.7/32",
                    "--idle-stop", "off", "--no-browser")
        assert up.returncode == 0, up.stdout + up.stderr
        url = URL_RE.search(up.stdout).group(1)
        base, token = url.split("/lab?token=")
        answer = requests.get(f"{base}/api/status", timeout=10,
                              headers={"Authorization": f"token {token}"})
        assert answer.status_code == 200
        device = json.loads((far_home / ".gpubox/state/device.json").read_text())
        assert device["ok"] is True and device["device"] == "cpu"
        [instance] = [i for r in ec2.describe_instances()["Reservations"]
                      for i in r["Instances"]]
        assert instance["KeyName"] == "gpubox-box1"
        assert instance["State"]["Name"] == "running"

        down = gpubox("down", "box1", "--yes")
        assert down.returncode == 0, down.stderr
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{base}/api/status", timeout=5)  # the tunnel is closed
        states = [i["State"]["Name"] for r in ec2.describe_instances()["Reservations"]
                  for i in r["Instances"]]
        assert states == ["terminated"]
        assert ec2.describe_key_pairs()["KeyPairs"] == []


def test_ctrl_c_during_setup_names_the_box_and_a_rerun_continues(moto_server, isolation, tmp_path):
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) while the
    bootstrap installs the framework: the message names the step, the running box and
    its $/h, and both commands; `up` again skips the steps done and ends with Jupyter."""
    import re
    import signal
    import subprocess
    import sys
    import threading
    import time
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST"))
    seed_images("us-east-1")
    keys = isolation / "data" / "keys"
    keys.mkdir(parents=True, mode=0o700)
    key = keygen(keys / "box1.pem", "box1")
    up = ("up", "box1", "--type", "g4dn.xlarge", "--ssh-from", "203.0.113.7/32",
          "--idle-stop", "off", "--no-browser")  # fmt: skip
    with far_host(tmp_path, user_key=key, box="box1") as far_side:
        far_side.env.update({
            "AWS_ENDPOINT_URL": moto_server,
            "GPUBOX_SSH_ADDRESS": f"127.0.0.1:{far_side.server.port}",
            "GPUBOX_SSH_USER_AWS": "root",
        })  # fmt: skip
        proc = subprocess.Popen(
            [sys.executable, "-m", "gpubox", *up], env=far_side.env, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip
        said: list[str] = []
        reader = threading.Thread(target=lambda: said.extend(proc.stderr), daemon=True)
        reader.start()
        python_done = re.compile(r"^[✓·] python\b", re.MULTILINE)
        deadline = time.monotonic() + 180
        try:
            while proc.poll() is None and not python_done.search("".join(said)):
                assert time.monotonic() < deadline, "".join(said)
                time.sleep(0.05)
            assert proc.poll() is None, "".join(said)
            os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C on a terminal does
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        reader.join(timeout=10)
        err = "".join(said)
        assert proc.returncode == 130, err
        assert "Traceback" not in err and "internal error" not in err
        # The signal comes as the python step ends: the framework step has started, or not yet.
        assert re.search(r"interrupted by SIGINT while setting up 'box1', "
                         r"(step framework|after step python) \(a re-run skips", err), err
        for text in ["$0.531/h + $5.12/month disk - box 'box1', g4dn.xlarge, running",
                     "it costs $0.53/h",
                     "finish it:  gpubox up box1 --type g4dn.xlarge",
                     "undo it:    gpubox down box1 --yes"]:  # fmt: skip
            assert text in err, err

        again = far_side.gpubox(*up)
        assert again.returncode == 0, again.stdout + again.stderr
        assert re.search(r"^· python\b", again.stderr, re.MULTILINE), again.stderr  # skipped
        assert "found box 'box1'" in again.stderr
        assert URL_RE.search(again.stdout)
