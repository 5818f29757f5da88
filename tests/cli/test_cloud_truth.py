"""The cloud is the truth: the real `gpubox` command, as subprocesses, against moto's
server on 127.0.0.1. A laptop with an empty GPUBOX_HOME sees, costs and removes a box
made elsewhere; concurrent `up` of one name end with one instance; `status` right after
a change never shows the box as it was.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.cli.test_aws_subprocess import SSH_FROM, endpoint, gpubox  # noqa: F401
from tests.providers.aws.moto_seed import seed_images

UP = ("up", "box1", "--type", "g4dn.xlarge", "--no-setup", "--ssh-from", SSH_FROM)


def env_with_home(home) -> dict[str, str]:
    return {**os.environ, "GPUBOX_HOME": str(home)}


def live_named(url: str, name: str, region: str = "us-east-1") -> list[dict]:
    import boto3

    ec2 = boto3.client("ec2", region_name=region, endpoint_url=url)
    found = ec2.describe_instances(Filters=[{"Name": "tag:gpubox:box", "Values": [name]}])
    return [i for r in found["Reservations"] for i in r["Instances"]
            if i["State"]["Name"] not in ("terminated", "shutting-down")]  # fmt: skip


def test_a_new_laptop_sees_costs_and_removes_a_box_made_elsewhere(endpoint, tmp_path):  # noqa: F811
    seed_images("eu-west-1")
    first = env_with_home(tmp_path / "first-laptop")
    made = gpubox(*UP, "--region", "eu-west-1", env=first)
    assert made.returncode == 0, made.stderr
    (inst,) = live_named(endpoint, "box1", "eu-west-1")

    # Another laptop: nothing recorded, box searched in the regions of the setting.
    other = {**env_with_home(tmp_path / "new-laptop"), "GPUBOX_AWS_REGIONS": "us-west-2,eu-west-1"}
    status = gpubox("status", "--refresh", "--json", env=other)
    assert status.returncode == 0, status.stderr
    assert [(b["name"], b["id"], b["state"]) for b in json.loads(status.stdout)] == [
        ("box1", inst["InstanceId"], "running")
    ]
    cached = gpubox("status", "--json", env=other)  # within the cache's life: no AWS call
    assert [b["name"] for b in json.loads(cached.stdout)] == ["box1"]
    cost = gpubox("cost", "--json", "--refresh", env=other)
    assert cost.returncode == 0, cost.stderr
    assert json.loads(cost.stdout)["running_per_hour"] > 0.5

    down = gpubox("down", "box1", "--yes", env=other)
    assert down.returncode == 0, down.stderr
    assert live_named(endpoint, "box1", "eu-west-1") == []
    after = gpubox("status", "--json", env=other)
    assert json.loads(after.stdout) == []  # never the terminated box as running
    gc = gpubox("gc", "--json", env=other)
    assert gc.returncode == 0, gc.stderr
    assert json.loads(gc.stdout)["garbage"] == []  # key pair and group went with the box


@pytest.mark.parametrize(("processes", "homes"), [(8, 1), (8, 8), (2, 2)])
def test_concurrent_up_of_one_name_ends_with_one_instance(endpoint, tmp_path, processes, homes):  # noqa: F811
    """Started together, from one HOME (two terminals) or several (several laptops): the
    others wait on the lock and find the box, continue on the instance the ClientToken
    gives back, terminate a second one at once, or stop with a clear message."""
    from gpubox.state import State

    for n in range(homes):
        # The state file exists already: this test is of the cloud side. (Its creation by
        # racing commands on a new HOME is the state module's own test.)
        State(tmp_path / f"home{n}" / "data" / "state.sqlite").close()
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "gpubox", *UP], stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**env_with_home(tmp_path / f"home{n % homes}"), "COLUMNS": "200"},
        )  # fmt: skip
        for n in range(processes)
    ]
    outcomes = [(run.wait(timeout=300), run.stderr.read()) for run in runs]
    for run in runs:
        run.stdout.close()
        run.stderr.close()
    for code, err in outcomes:  # what each user saw (docs/reliability.md), with -s
        print(code, err.strip().splitlines()[-1] if err.strip() else "")
    assert len(live_named(endpoint, "box1")) == 1, outcomes
    assert all(code == 0 or "error:" in err for code, err in outcomes), outcomes
    assert not any("Traceback" in err or "internal error" in err for _, err in outcomes), outcomes
    assert sum(code == 0 for code, _ in outcomes) >= 1
    # One of them made the box; the others say they found it (before, a racer that got
    # the instance back from the ClientToken or another laptop's launch said "made" too).
    assert sum("made box 'box1' (aws" in err for _, err in outcomes) == 1, outcomes
