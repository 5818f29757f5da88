"""The money commands, run through gpubox's own entry point against moto (in-process):
cost, image, images, image rm, gc, autostop, with their bad inputs."""

from __future__ import annotations

import json
import time

import pytest

from gpubox.providers.base import BoxSpec

REGION = "us-east-1"


def gpubox(capsys, *args):
    """Run `gpubox ARGS` in this process; (exit code, stdout, stderr)."""
    from gpubox.cli.main import run

    code = 0
    try:
        run(list(args))
    except SystemExit as exc:
        code = exc.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def aws(isolation, monkeypatch):
    from moto import mock_aws

    from tests.providers.aws.moto_seed import seed_images

    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)  # moto in-process, not a server
    with mock_aws():
        seed_images(REGION)
        yield


@pytest.fixture
def box1(aws, settings):
    """An AWS box made by `box.up` (no setup): instance, key, group, state, run history."""
    from gpubox import box
    from gpubox.state import State

    state = State(settings.state_path)
    spec = BoxSpec(name="b1", provider="aws", type="g4dn.xlarge", region=REGION,
                   ssh_from="198.51.100.7/32", disk_gb=80)  # fmt: skip
    made = box.up(settings, state, spec, setup=False).box
    state.close()
    return made


def ec2():
    import boto3

    return boto3.client("ec2", region_name=REGION)


def test_image_images_and_image_rm(capsys, box1):
    code, out, err = gpubox(capsys, "image", "b1", "--as", "base")
    assert code == 0, err
    assert "saved image 'base'" in err and "gpubox up NEW --image base" in out
    assert "without a reboot" in err  # said plainly: not stopped, so maybe not consistent

    code, out, _ = gpubox(capsys, "images")
    assert code == 0 and "base" in out and "/month" in out
    code, out, _ = gpubox(capsys, "images", "--json")
    listed = json.loads(out)
    assert [i["name"] for i in listed] == ["base"]
    snapshots = listed[0]["snapshot_ids"]

    code, _, err = gpubox(capsys, "image", "b1", "--as", "base")
    assert code == 2 and "already exists" in err and "gpubox image rm base" in err

    code, _, err = gpubox(capsys, "image", "rm", "base")  # no terminal, no --yes
    assert code == 1 and "nothing was deleted" in err
    assert ec2().describe_images(Owners=["self"])["Images"]

    code, out, err = gpubox(capsys, "image", "rm", "base", "--yes")
    assert code == 0, err
    assert ec2().describe_images(Owners=["self"])["Images"] == []
    left = {s["SnapshotId"] for s in ec2().describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    assert not left & set(snapshots)


def test_image_of_a_box_that_does_not_exist(capsys, box1):
    code, _, err = gpubox(capsys, "image", "ghost", "--as", "x")
    assert code == 1 and "no box called 'ghost'" in err
    assert ec2().describe_images(Owners=["self"])["Images"] == []


def test_image_rm_of_an_image_a_box_came_from_is_allowed_and_said(capsys, box1, settings):
    from gpubox import box
    from gpubox.state import State

    assert gpubox(capsys, "image", "b1", "--as", "base", "--stop")[0] == 0
    state = State(settings.state_path)
    box.up(settings, state, BoxSpec(name="b2", provider="aws", type="g4dn.xlarge", region=REGION,
                                    image="base", ssh_from="198.51.100.7/32"), setup=False)  # fmt: skip
    state.close()
    code, _, err = gpubox(capsys, "image", "rm", "base", "--yes")
    assert code == 0, err
    assert "source of: b2" in err


def test_image_rm_needs_a_name(capsys, aws):
    code, _, err = gpubox(capsys, "image", "rm")
    assert code == 2 and "say which image" in err


def test_cost_json_prices_with_source_and_date(capsys, box1):
    gpubox(capsys, "image", "b1", "--as", "base")
    code, out, err = gpubox(capsys, "cost", "--json", "--cached")
    assert code == 0, err
    report = json.loads(out)
    (b,) = report["boxes"]
    assert b["name"] == "b1" and b["state"] == "running"
    assert b["per_hour"] > 0 and b["hourly_rate"]["source"] and b["hourly_rate"]["date"]
    assert b["storage_per_month"] == pytest.approx(80 * b["storage_rate"]["value"])
    assert b["address_per_hour"] == 0.005  # its public IPv4 address, billed since 2024
    assert report["running_per_hour"] == pytest.approx(b["per_hour"] + 0.005)
    assert [i["name"] for i in report["images"]] == ["base"]
    code, out, _ = gpubox(capsys, "cost", "--cached")
    assert code == 0 and "b1" in out and "this month so far" in out


def test_cost_keeps_a_downed_box_in_the_month(capsys, box1, settings):
    from gpubox.state import State

    state = State(settings.state_path)
    (run,) = state.runs("b1")
    state._db.execute("UPDATE runs SET started_at = started_at - 7200")  # it ran 2 h
    state.close()
    code, _, err = gpubox(capsys, "down", "b1", "--yes")
    assert code == 0, err
    code, out, err = gpubox(capsys, "cost", "--json")
    assert code == 0, err
    report = json.loads(out)
    (gone,) = report["boxes"]
    assert (gone["name"], gone["state"]) == ("b1", "terminated")
    assert gone["spent_compute"] == pytest.approx(2 * 0.526, rel=0.05)
    # This month's part: all of it, unless the month began less than 2 h ago.
    from gpubox.cost import month_start

    hours = min(2.0, (time.time() - month_start(time.time())) / 3600)
    assert gone["month_compute"] == pytest.approx(hours * 0.526, rel=0.05, abs=0.01)
    assert report["month_so_far"] == pytest.approx(hours * 0.526, rel=0.05, abs=0.01)
    assert report["running_per_hour"] == 0


def test_gc_lists_then_removes_only_with_yes(capsys, box1):
    tags = [{"ResourceType": "security-group", "Tags": [{"Key": "gpubox:box", "Value": "gone"}]}]
    sg = ec2().create_security_group(GroupName="gpubox-gone", Description="x",
                                     TagSpecifications=tags)["GroupId"]  # fmt: skip
    code, out, _ = gpubox(capsys, "gc")
    assert code == 0 and sg in out and "box 'gone' no longer exists" in out
    assert ec2().describe_security_groups(GroupIds=[sg])["SecurityGroups"]  # no yes: kept

    code, out, err = gpubox(capsys, "gc", "--yes")
    assert code == 0, err
    groups = ec2().describe_security_groups()["SecurityGroups"]
    assert sg not in {g["GroupId"] for g in groups}
    assert "gpubox-b1" in {g["GroupName"] for g in groups}  # the live box's group stays


def test_gc_in_a_region_never_used(capsys, box1):
    code, out, err = gpubox(capsys, "gc", "--region", "eu-west-2")
    assert code == 0
    assert "nothing left behind in eu-west-2" in err


def test_gc_with_no_aws_at_all(capsys, aws):
    code, _, err = gpubox(capsys, "gc")
    assert code == 0 and "nothing left behind in us-east-1" in err


@pytest.mark.parametrize("limit", ["0", "banana", "0m"])
def test_autostop_bad_limits(capsys, aws, limit):
    code, _, err = gpubox(capsys, "autostop", "b1", limit)
    assert code == 2 and "error:" in err


@pytest.mark.machine_wide  # the agent reads every process here
def test_autostop_on_a_local_box_sets_shows_and_turns_off(capsys, isolation, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "host-home"))
    monkeypatch.setenv("GPUBOX_IDLE_STOP_COMMAND", f"echo stopped >> {tmp_path}/stops")
    monkeypatch.setenv("COLUMNS", "200")
    from gpubox import box, config
    from gpubox.state import State

    settings = config.load()
    state = State(settings.state_path)
    box.up(settings, state, BoxSpec(name="l1", provider="local"), setup=False)
    state.close()
    try:
        code, out, err = gpubox(capsys, "autostop", "l1", "45m")
        assert code == 0, err
        assert "idle auto-stop after 45m" in err
        code, out, err = gpubox(capsys, "autostop", "l1")
        assert code == 0 and "of 45m" in out
        code, out, err = gpubox(capsys, "status", "l1")
        assert code == 0 and "l1: idle" in out and "of 45m" in out
        code, out, err = gpubox(capsys, "status", "l1", "--json")
        assert json.loads(out)[0]["idle"]["limit_minutes"] == 45
    finally:
        code, _, err = gpubox(capsys, "autostop", "l1", "off")
    assert code == 0 and "bills until you stop it" in err



def test_gpubox_command_gc_against_a_moto_server(moto_server, isolation, monkeypatch, settings):
    import os
    import subprocess
    import sys

    import boto3
    import requests

    from gpubox.providers.aws.session import remember_region
    from gpubox.state import State

    requests.post(moto_server + "/moto-api/reset", timeout=10)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    client = boto3.client("ec2", region_name=REGION, endpoint_url=moto_server)
    tags = [{"ResourceType": "key-pair", "Tags": [{"Key": "gpubox:box", "Value": "gone"}]}]
    client.create_key_pair(KeyName="gpubox-gone", TagSpecifications=tags)
    client.create_key_pair(KeyName="not-gpubox")
    state = State(settings.state_path)
    remember_region(state, REGION)
    state.close()

    def gpubox_cmd(*args):
        return subprocess.run([sys.executable, "-m", "gpubox", *args], capture_output=True,
                              text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})  # fmt: skip

    listed = gpubox_cmd("gc", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [g["id"] for g in json.loads(listed.stdout)["garbage"]] == ["gpubox-gone"]

    removed = gpubox_cmd("gc", "--yes")
    assert removed.returncode == 0, removed.stderr
    names = {k["KeyName"] for k in client.describe_key_pairs()["KeyPairs"]}
    assert names == {"not-gpubox"}

    missing = gpubox_cmd("image", "ghost", "--as", "x")
    assert missing.returncode == 1
    assert missing.stderr.startswith("error: no box called 'ghost'")


@pytest.mark.parametrize("limit", ["0", "banana"])
def test_up_with_a_bad_idle_stop_makes_nothing(capsys, aws, limit):
    code, _, err = gpubox(capsys, "up", "b9", "--type", "g4dn.xlarge", "--region", REGION,
                          "--idle-stop", limit, "--no-setup")  # fmt: skip
    assert code == 2 and "error:" in err
    assert ec2().describe_instances()["Reservations"] == []


def test_a_box_stopped_behind_gpuboxs_back_ends_its_run_at_ec2s_stop_time(box1, settings):
    """The idle agent (or the console) stops the box; gpubox sees it only at `start`."""
    from gpubox import box
    from gpubox.providers.aws.instances import transition_time
    from gpubox.state import State

    ec2().stop_instances(InstanceIds=[box1.id])
    reason = ec2().describe_instances(InstanceIds=[box1.id])["Reservations"][0]["Instances"][0][
        "StateTransitionReason"
    ]
    state = State(settings.state_path)
    box.stop(settings, state, "b1")  # stop of a stopped box: the stop, at EC2's time, once
    box.start(settings, state, "b1")
    first, second = state.runs("b1")
    assert first["stopped_at"] == transition_time(reason)
    assert second["stopped_at"] is None and second["started_at"] >= first["stopped_at"]
    state.close()


def test_gc_finds_leftovers_in_a_region_this_laptop_never_used(capsys, aws, monkeypatch):
    """The Tagging API tells which searched regions hold anything of gpubox's (one call
    each); only those are looked at closely."""
    import boto3

    monkeypatch.setenv("GPUBOX_AWS_REGIONS", "us-east-1,eu-west-1,us-west-2")
    west = boto3.client("ec2", region_name="eu-west-1")
    tags = [{"ResourceType": "security-group", "Tags": [{"Key": "gpubox:box", "Value": "old"}]}]
    sg = west.create_security_group(GroupName="gpubox-old", Description="x",
                                    TagSpecifications=tags)["GroupId"]  # fmt: skip
    code, out, err = gpubox(capsys, "gc", "--json")
    assert code == 0, err
    plan = json.loads(out)
    assert [(g["id"], g["region"]) for g in plan["garbage"]] == [(sg, "eu-west-1")]
    assert sorted(plan["regions"]) == ["eu-west-1", "us-east-1", "us-west-2"]
