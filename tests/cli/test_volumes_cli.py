"""A data volume's life through the real `gpubox` command, as a subprocess, against moto's
server on 127.0.0.1: up --volume, volumes, down keeping it, volume rm (no yes, then yes)."""

from __future__ import annotations

import json

import pytest

from tests.cli import test_aws_subprocess as aws_cli
from tests.cli.test_aws_subprocess import SSH_FROM, ec2_client, gpubox

# The same fixture as the other subprocess tests: a wiped moto world, AWS_ENDPOINT_URL set.
endpoint = aws_cli.endpoint


def data_volumes(url: str) -> list[dict]:
    found = ec2_client(url).describe_volumes(
        Filters=[{"Name": "tag:gpubox:volume", "Values": ["data"]}]
    )
    return found["Volumes"]


@pytest.mark.slow  # five `gpubox` processes, about 20 s on 2 shared cores
def test_a_data_volume_from_up_to_volume_rm(endpoint):
    up = gpubox("up", "b1", "--type", "g4dn.xlarge", "--no-setup", "--ssh-from", SSH_FROM,
                "--volume", "data:30")  # fmt: skip
    assert up.returncode == 0, up.stderr
    assert "volume 'data': 30 GiB in us-east-1" in up.stdout and "/month" in up.stdout
    (vol,) = data_volumes(endpoint)
    assert vol["State"] == "in-use" and vol["Encrypted"]

    listed = gpubox("volumes", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [(v["name"], v["size_gb"], v["box"]) for v in json.loads(listed.stdout)] == [
        ("data", 30, "b1")]  # fmt: skip

    down = gpubox("down", "b1", "--yes")
    assert down.returncode == 0, down.stderr
    assert "kept volume 'data' (30 GiB" in down.stderr
    assert data_volumes(endpoint)[0]["State"] == "available"

    refused = gpubox("volume", "rm", "data")  # stdin is not a terminal, no --yes
    assert refused.returncode == 1 and "nothing was deleted" in refused.stderr
    assert len(data_volumes(endpoint)) == 1

    removed = gpubox("volume", "rm", "data", "--yes")
    assert removed.returncode == 0, removed.stderr
    assert data_volumes(endpoint) == []
