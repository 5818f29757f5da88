"""`gpubox resize` through moto, in-process: another type and a bigger disk for a stopped
box, a yes before a running one is stopped, and the types and sizes refused (with the
catalog's did-you-mean) before anything changes."""

from __future__ import annotations

import pytest

from gpubox.providers.base import BoxSpec
from tests.providers.aws.test_volumes import REGION, SSH_FROM, gpubox


@pytest.fixture
def ec2(aws):
    import boto3

    return boto3.client("ec2", region_name=REGION)


@pytest.fixture
def b1(settings, ec2):
    """A running g4dn.xlarge box with an 80 GB disk, made by `box.up` (no setup)."""
    from gpubox import box
    from gpubox.state import State

    state = State(settings.state_path)
    spec = BoxSpec(name="b1", provider="aws", type="g4dn.xlarge", region=REGION,
                   ssh_from=SSH_FROM, disk_gb=80)  # fmt: skip
    made = box.up(settings, state, spec, setup=False).box
    state.close()
    return made.id


def described(ec2, instance_id: str) -> tuple[str, str, int]:
    inst = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    root = next(m for m in inst["BlockDeviceMappings"] if m["DeviceName"] == inst["RootDeviceName"])
    size = ec2.describe_volumes(VolumeIds=[root["Ebs"]["VolumeId"]])["Volumes"][0]["Size"]
    return inst["State"]["Name"], inst["InstanceType"], size


def test_resize_of_a_stopped_box_changes_type_and_disk_starts_it_and_says_the_new_price(
    capsys, ec2, b1
):
    assert gpubox(capsys, "stop", "b1")[0] == 0
    code, out, err = gpubox(capsys, "resize", "b1", "--type", "g5.xlarge", "--disk", "120")
    assert code == 0, err
    assert described(ec2, b1) == ("running", "g5.xlarge", 120)
    assert "'b1' is running as g5.xlarge, disk 120 GB" in err
    assert "now $1.01/h while it runs (was g4dn.xlarge)" in out  # the shipped price snapshot
    assert "filesystem grows as it boots" in err


def test_a_running_box_is_not_stopped_without_a_yes(capsys, ec2, b1):
    code, _, err = gpubox(capsys, "resize", "b1", "--type", "g5.xlarge")  # no terminal
    assert code == 1 and "nothing was changed" in err and "--yes" in err
    assert described(ec2, b1) == ("running", "g4dn.xlarge", 80)
    code, _, err = gpubox(capsys, "resize", "b1", "--type", "g5.xlarge", "--yes")
    assert code == 0, err
    assert described(ec2, b1) == ("running", "g5.xlarge", 80)


@pytest.mark.parametrize(
    ("args", "code", "said"),
    [
        (("--type", "g5.xlarg"), 1, "did you mean 'g5.xlarge'?"),
        (("--type", "m5.large"), 1, "m5.large has no NVIDIA GPU"),
        (("--type", "g5g.xlarge"), 2, "g5g.xlarge is arm64"),
        (("--disk", "40"), 2, "a disk never shrinks to 40"),
        ((), 2, "nothing to change"),
    ],
)
def test_bad_types_and_sizes_are_refused_before_anything_changes(capsys, ec2, b1, args, code, said):
    assert gpubox(capsys, "stop", "b1")[0] == 0
    got, _, err = gpubox(capsys, "resize", "b1", *args, "--yes")
    assert got == code, err
    assert said in " ".join(err.split())
    assert described(ec2, b1) == ("stopped", "g4dn.xlarge", 80)


def test_a_spot_box_type_is_not_changed_but_its_disk_grows(capsys, settings, ec2):
    from gpubox import box
    from gpubox.state import State

    state = State(settings.state_path)
    spec = BoxSpec(name="s1", provider="aws", type="g4dn.xlarge", region=REGION,
                   ssh_from=SSH_FROM, disk_gb=80, spot=True)  # fmt: skip
    made = box.up(settings, state, spec, setup=False).box
    state.close()
    code, _, err = gpubox(capsys, "resize", "s1", "--type", "g5.xlarge", "--yes")
    assert code == 2 and "never changes a spot instance's type" in " ".join(err.split())
    assert described(ec2, made.id)[1:] == ("g4dn.xlarge", 80)
    code, _, err = gpubox(capsys, "resize", "s1", "--disk", "90", "--yes")
    assert code == 0, err
    assert described(ec2, made.id) == ("running", "g4dn.xlarge", 90)


def test_resize_of_a_host_gpubox_does_not_rent_is_not_supported(capsys, aws):
    code, _, err = gpubox(capsys, "up", "here", "--provider", "local", "--no-setup")
    assert code == 0, err
    code, _, err = gpubox(capsys, "resize", "here", "--type", "g5.xlarge", "--yes")
    assert code == 1 and "gpubox resizes the AWS boxes it rents" in err


@pytest.mark.parametrize("args", [("--type", "g4dn.xlarge"), ("--disk", "80"),
                                  ("--type", "g4dn.xlarge", "--disk", "80")])
def test_a_change_that_changes_nothing_is_refused_and_a_running_box_keeps_running(
    capsys, ec2, b1, args
):
    code, _, err = gpubox(capsys, "resize", "b1", *args, "--yes")
    assert code == 2, err
    assert "is a g4dn.xlarge with a 80 GB disk already: nothing to change" in " ".join(err.split())
    assert described(ec2, b1) == ("running", "g4dn.xlarge", 80)  # never stopped
