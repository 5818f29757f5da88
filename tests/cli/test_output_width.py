"""Output that survives a pipe: the real `gpubox` command, stdout a pipe, against moto's
server. No table may cut an ID, a name, an address or an amount with "…", whether
COLUMNS is unset (rich's default width, 80) or 80; --json is unchanged."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.cli import test_aws_subprocess
from tests.cli.test_aws_subprocess import SSH_FROM, ec2_client, live_instances

endpoint = test_aws_subprocess.endpoint  # the fixture: a wiped moto world, AWS_ENDPOINT_URL set

LONG = "box-with-a-name-long-enough-to-cut-it"
WIDTHS = [None, "80"]


def gpubox(*args: str, columns: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    if columns:
        env["COLUMNS"] = columns
    return subprocess.run(
        [sys.executable, "-m", "gpubox", *args],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, env=env, timeout=120,
    )  # fmt: skip


@pytest.fixture
def world(endpoint, isolation):
    """A running box with a long name, a leftover volume and security group, a saved image."""
    up = gpubox("up", LONG, "--type", "g4dn.xlarge", "--no-setup", "--ssh-from", SSH_FROM,
                columns="200")  # fmt: skip
    assert up.returncode == 0, up.stderr
    ec2 = ec2_client(endpoint)
    tags = [{"Key": "gpubox:box", "Value": f"{LONG}-gone"}]
    volume = ec2.create_volume(
        AvailabilityZone="us-east-1a", Size=8,
        TagSpecifications=[{"ResourceType": "volume", "Tags": tags}],
    )["VolumeId"]  # fmt: skip
    group = ec2.create_security_group(
        GroupName=f"gpubox-{LONG}-gone", Description="left behind",
        TagSpecifications=[{"ResourceType": "security-group", "Tags": tags}],
    )["GroupId"]  # fmt: skip
    (inst,) = live_instances(endpoint)
    image = ec2.create_image(InstanceId=inst["InstanceId"], Name=f"{LONG}-image")["ImageId"]
    ec2.create_tags(Resources=[image], Tags=[{"Key": "gpubox:image", "Value": f"{LONG}-image"},
                                             {"Key": "gpubox:box", "Value": LONG}])  # fmt: skip
    return {"address": inst["PublicIpAddress"], "volume": volume, "group": group, "image": image}


@pytest.mark.parametrize("columns", WIDTHS)
def test_tables_in_a_pipe_keep_every_id_name_address_and_amount_whole(world, columns):
    status = gpubox("status", columns=columns)
    assert status.returncode == 0, status.stderr
    assert LONG in status.stdout and world["address"] in status.stdout
    assert "$0.53/h" in status.stdout

    cost = gpubox("cost", columns=columns)
    assert cost.returncode == 0, cost.stderr
    assert LONG in cost.stdout

    gc = gpubox("gc", "--region", "us-east-1", columns=columns)
    assert gc.returncode == 0, gc.stderr
    assert world["volume"] in gc.stdout and world["group"] in gc.stdout
    assert f"{LONG}-gone" in gc.stdout

    images = gpubox("images", columns=columns)
    assert images.returncode == 0, images.stderr
    assert f"{LONG}-image" in images.stdout and world["image"] in images.stdout
    assert "available" in images.stdout and "/month" in images.stdout

    for out in (status.stdout, cost.stdout, gc.stdout, images.stdout):
        assert "…" not in out, out


@pytest.mark.parametrize("columns", WIDTHS)
def test_types_in_a_pipe_lists_every_type_and_price_whole(endpoint, columns):
    listed = gpubox("types", "--json", columns=columns)
    assert listed.returncode == 0, listed.stderr
    types = json.loads(listed.stdout)
    table = gpubox("types", columns=columns)
    assert table.returncode == 0, table.stderr
    assert "…" not in table.stdout, table.stdout
    for t in types:
        assert t["name"] in table.stdout
        if t["on_demand"]:
            assert f"${t['on_demand']['value']:,.2f}/h" in table.stdout


def test_json_is_the_same_whatever_the_width(world):
    wide = gpubox("status", "--json", columns="400")
    narrow = gpubox("status", "--json", columns="20")
    assert json.loads(wide.stdout)[0]["name"] == LONG
    assert [b["name"] for b in json.loads(narrow.stdout)] == [LONG]


def test_on_a_narrow_terminal_a_long_id_folds_instead_of_being_cut(monkeypatch):
    import io

    from rich.console import Console

    from gpubox.cli import render

    out = io.StringIO()
    terminal = Console(file=out, width=12, force_terminal=True, color_system=None)
    monkeypatch.setattr(render, "_console", terminal)  # a terminal 12 columns wide
    render.table(["id"], [["vol-0123456789abcdef0"]])
    lines = out.getvalue().splitlines()
    assert "…" not in out.getvalue()
    assert "".join(line.strip() for line in lines[1:]) == "vol-0123456789abcdef0"
