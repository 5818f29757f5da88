"""The real `gpubox` command, as a subprocess, against moto's server on 127.0.0.1.

The server runs in this test process (ThreadedMotoServer), so the test seeds the images
and SSM parameters moto lacks straight into its backends, and reads what the command
made with boto3 through the same endpoint.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.providers.aws.moto_seed import seed_images

SSH_FROM = "203.0.113.7/32"


@pytest.fixture
def endpoint(moto_server, isolation, monkeypatch):
    """A wiped moto world with us-east-1's images seeded; AWS_ENDPOINT_URL points at it."""
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST"))
    seed_images("us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    return moto_server


def gpubox(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gpubox", *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env={**(env or os.environ), "COLUMNS": "200"},
        timeout=120,
    )


def ec2_client(endpoint: str):
    import boto3

    return boto3.client("ec2", region_name="us-east-1", endpoint_url=endpoint)


def live_instances(endpoint: str) -> list[dict]:
    found = ec2_client(endpoint).describe_instances()["Reservations"]
    return [i for r in found for i in r["Instances"] if i["State"]["Name"] != "terminated"]


def test_types_lists_gpu_types_with_prices_and_their_source(endpoint):
    done = gpubox("types", "--gpu", "T4")
    assert done.returncode == 0, done.stderr
    assert "g4dn.xlarge" in done.stdout and "$0.53/h" in done.stdout
    assert "approximate snapshot of" in done.stderr
    listed = gpubox("types", "--gpu", "H100", "--json")
    assert listed.returncode == 0, listed.stderr
    types = {t["name"]: t for t in json.loads(listed.stdout)}
    assert types["p5.48xlarge"]["gpu_count"] == 8
    assert types["p5.48xlarge"]["on_demand"]["source"] == "snapshot"


def test_up_status_stop_start_down_on_aws(endpoint, isolation):
    up = gpubox("up", "box1", "--type", "g4dn.xlarge", "--no-setup", "--ssh-from", SSH_FROM)
    assert up.returncode == 0, up.stderr
    (inst,) = live_instances(endpoint)
    assert {t["Key"]: t["Value"] for t in inst["Tags"]}["gpubox:box"] == "box1"
    key_file = isolation / "data" / "keys" / "box1.pem"
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    assert "PRIVATE KEY" not in up.stdout + up.stderr

    again = gpubox("up", "box1", "--type", "g4dn.xlarge", "--no-setup", "--ssh-from", SSH_FROM)
    assert again.returncode == 0, again.stderr
    assert [i["InstanceId"] for i in live_instances(endpoint)] == [inst["InstanceId"]]

    status = gpubox("status", "--json", "--refresh")
    assert status.returncode == 0, status.stderr
    (box,) = json.loads(status.stdout)
    assert (box["name"], box["state"], box["id"], box["type"]) == (
        "box1", "running", inst["InstanceId"], "g4dn.xlarge",
    )

    stop = gpubox("stop", "box1")
    assert stop.returncode == 0
    assert "still billed while stopped: its 64 GB disk, about $5.12/month" in stop.stdout
    assert live_instances(endpoint)[0]["State"]["Name"] == "stopped"
    table = gpubox("status", "--refresh").stdout
    assert "stopped" in table and "$5.12/mo disk" in table  # what a stopped box keeps costing
    assert gpubox("start", "box1").returncode == 0
    assert live_instances(endpoint)[0]["State"]["Name"] == "running"

    down = gpubox("down", "box1", "--yes")
    assert down.returncode == 0, down.stderr
    assert live_instances(endpoint) == []
    ec2 = ec2_client(endpoint)
    assert ec2.describe_key_pairs()["KeyPairs"] == []
    groups = ec2.describe_security_groups()["SecurityGroups"]
    assert [g["GroupName"] for g in groups if g["GroupName"].startswith("gpubox-")] == []
    assert not key_file.exists()


def test_down_without_yes_and_without_tty_deletes_nothing(endpoint):
    assert gpubox("up", "box1", "--type", "g4dn.xlarge", "--no-setup",
                  "--ssh-from", SSH_FROM).returncode == 0
    down = gpubox("down", "box1")
    assert down.returncode != 0
    assert "nothing was deleted" in down.stderr
    (inst,) = live_instances(endpoint)
    assert inst["State"]["Name"] == "running"


def test_typo_in_a_box_name_suggests_the_close_one(endpoint):
    assert gpubox("up", "box1", "--type", "g4dn.xlarge", "--no-setup",
                  "--ssh-from", SSH_FROM).returncode == 0
    stop = gpubox("stop", "bxo1")
    assert stop.returncode != 0
    assert "no box called 'bxo1'" in stop.stderr and "did you mean 'box1'" in stop.stderr
    assert live_instances(endpoint)[0]["State"]["Name"] == "running"


def test_unknown_type_is_one_error_line_and_makes_nothing(endpoint):
    up = gpubox("up", "box1", "--type", "g4dn.xlarg", "--no-setup", "--ssh-from", SSH_FROM)
    assert up.returncode != 0
    assert up.stderr.startswith("error:") and "'g4dn.xlarg' is not an EC2 instance type" in up.stderr
    assert "did you mean 'g4dn.xlarge'" in up.stderr
    assert "Traceback" not in up.stderr
    assert live_instances(endpoint) == []


def test_missing_credentials_say_how_to_configure_them(endpoint):
    env = {k: v for k, v in os.environ.items()
           if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                        "AWS_SECURITY_TOKEN")}
    done = gpubox("types", env=env)
    assert done.returncode != 0
    assert "credentials" in done.stderr and "aws configure" in done.stderr
    assert "Traceback" not in done.stderr


def run_in_terminal(args: list[str], answers: list[tuple[str, str]], timeout: float = 120):
    """Run `gpubox ARGS` on a real pseudo-terminal, answering each prompt as it appears.

    Returns (exit code, everything the terminal showed)."""
    import os as _os
    import pty
    import select
    import time

    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpubox", *args], stdin=slave, stdout=slave, stderr=slave,
        env={**os.environ, "COLUMNS": "200"}, close_fds=True,
    )
    _os.close(slave)
    shown, pending = "", list(answers)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = _os.read(master, 4096).decode(errors="replace")
            except OSError:  # the command ended and closed the terminal
                break
            shown += chunk
        if pending and pending[0][0] in shown:
            _os.write(master, (pending.pop(0)[1] + "\n").encode())
            shown += "\n"
        if proc.poll() is not None and not ready:
            break
    _os.close(master)
    return proc.wait(timeout=10), shown


def test_down_at_a_terminal_offers_an_image_first_and_asks_before_deleting(endpoint):
    assert gpubox("up", "box1", "--type", "g4dn.xlarge", "--no-setup",
                  "--ssh-from", SSH_FROM).returncode == 0
    code, shown = run_in_terminal(
        ["down", "box1"], [("Save an image of 'box1'", "y"), ("Terminate it?", "y")]
    )
    assert code == 0, shown
    assert "DELETES its" in shown  # the question said what goes
    images = ec2_client(endpoint).describe_images(
        Filters=[{"Name": "tag:gpubox:image", "Values": ["box1-final"]}]
    )["Images"]
    assert len(images) == 1
    assert live_instances(endpoint) == []


def test_down_at_a_terminal_answered_no_deletes_nothing(endpoint):
    assert gpubox("up", "box1", "--type", "g4dn.xlarge", "--no-setup",
                  "--ssh-from", SSH_FROM).returncode == 0
    code, shown = run_in_terminal(
        ["down", "box1"], [("Save an image of 'box1'", "n"), ("Terminate it?", "n")]
    )
    assert code != 0 and "nothing was deleted" in shown
    assert [i["State"]["Name"] for i in live_instances(endpoint)] == ["running"]
    assert ec2_client(endpoint).describe_images(Owners=["self"])["Images"] == []
