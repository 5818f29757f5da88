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
