"""gc against moto: leftovers the test makes with gpubox's tags are found, priced and removed;
untagged look-alikes, a live box's own resources and saved images are left alone."""

from __future__ import annotations

import pytest

from gpubox.providers.aws import gc
from gpubox.providers.aws import saved_images as si
from gpubox.providers.base import BoxSpec

REGION = "us-east-1"


def tagged(kind, box="gone"):
    return [{"ResourceType": kind, "Tags": [
        {"Key": "gpubox:box", "Value": box}, {"Key": "gpubox:owner", "Value": "arn:aws:iam::1:user/t"},
        {"Key": "gpubox:kind", "Value": kind}]}]  # fmt: skip


@pytest.fixture
def world(provider, ec2, settings):
    """A live box b1 with a saved image, leftovers of a box 'gone', and untagged look-alikes."""
    box = provider.launch(BoxSpec(name="b1", provider="aws", type="g4dn.xlarge", region=REGION,
                                  ssh_from="198.51.100.7/32"))  # fmt: skip
    saved = si.create_saved_image(settings, REGION, "b1", "keep-me").image
    vol = ec2.create_volume(AvailabilityZone="us-east-1a", Size=10, VolumeType="gp3",
                            TagSpecifications=tagged("volume"))["VolumeId"]  # fmt: skip
    snap = ec2.create_snapshot(VolumeId=vol, TagSpecifications=tagged("snapshot"))["SnapshotId"]
    sg = ec2.create_security_group(GroupName="gpubox-gone", Description="x",
                                   TagSpecifications=tagged("security-group"))["GroupId"]  # fmt: skip
    ec2.create_key_pair(KeyName="gpubox-gone", TagSpecifications=tagged("key-pair"))
    eip = ec2.allocate_address(Domain="vpc", TagSpecifications=tagged("elastic-ip"))["AllocationId"]
    untagged = {
        "volume": ec2.create_volume(AvailabilityZone="us-east-1a", Size=5)["VolumeId"],
        "sg": ec2.create_security_group(GroupName="gpubox-lookalike", Description="x")["GroupId"],
        "key": ec2.create_key_pair(KeyName="gpubox-lookalike")["KeyName"],
    }
    untagged["snapshot"] = ec2.create_snapshot(VolumeId=untagged["volume"])["SnapshotId"]
    orphans = {("volume", vol), ("snapshot", snap), ("security-group", sg),
               ("key-pair", "gpubox-gone"), ("elastic-ip", eip)}  # fmt: skip
    return {"box": box, "saved": saved, "orphans": orphans, "untagged": untagged, "vol": vol}


def test_finds_priced_orphans_and_nothing_else(settings, world):
    plan = gc.find_garbage(settings, [REGION], {"b1": world["box"].id})
    assert {(g.kind, g.id) for g in plan.garbage} == world["orphans"]
    by_kind = {g.kind: g for g in plan.garbage}
    assert by_kind["volume"].per_month == pytest.approx(10 * 0.08)
    assert by_kind["elastic-ip"].per_month == pytest.approx(0.005 * 730)
    assert by_kind["security-group"].why == "box 'gone' no longer exists"
    assert by_kind["snapshot"].why == "no registered image uses it"
    assert [g.id for g in plan.kept_images] == [world["saved"].image_id]
    assert plan.per_month == pytest.approx(sum(g.per_month for g in plan.garbage))


def test_collect_removes_the_orphans_and_leaves_the_rest(settings, ec2, world):
    plan = gc.find_garbage(settings, [REGION], {"b1": world["box"].id})
    said = []
    result = gc.collect(settings, plan, on_progress=said.append)
    assert result.failed == ()
    assert {(g.kind, g.id) for g in result.removed} == world["orphans"]
    assert len(said) == len(world["orphans"])

    assert gc.find_garbage(settings, [REGION], {"b1": world["box"].id}).garbage == ()
    # untagged look-alikes are still there
    u = world["untagged"]
    assert ec2.describe_volumes(VolumeIds=[u["volume"]])["Volumes"]
    assert ec2.describe_security_groups(GroupIds=[u["sg"]])["SecurityGroups"]
    assert ec2.describe_key_pairs(KeyNames=[u["key"]])["KeyPairs"]
    assert ec2.describe_snapshots(SnapshotIds=[u["snapshot"]])["Snapshots"]
    # the live box, its group and key, and the saved image are untouched
    inst = ec2.describe_instances(InstanceIds=[world["box"].id])["Reservations"][0]["Instances"][0]
    assert inst["State"]["Name"] == "running"
    assert ec2.describe_key_pairs(KeyNames=["gpubox-b1"])["KeyPairs"]
    assert ec2.describe_images(ImageIds=[world["saved"].image_id])["Images"]


def test_region_never_used_finds_nothing(settings, world):
    plan = gc.find_garbage(settings, ["us-west-2"], {})
    assert plan.garbage == () and plan.kept_images == ()
    assert gc.find_garbage(settings, [], {}).garbage == ()


def test_a_box_still_being_made_owns_its_group_and_key(settings, ec2, world):
    ec2.create_security_group(GroupName="gpubox-half", Description="x",
                              TagSpecifications=tagged("security-group", "half"))  # fmt: skip
    plan = gc.find_garbage(settings, [REGION], {"b1": world["box"].id, "half": None})
    assert all(g.box != "half" for g in plan.garbage)
    plan = gc.find_garbage(settings, [REGION], {"b1": world["box"].id})
    assert any(g.box == "half" and g.kind == "security-group" for g in plan.garbage)


def test_second_instance_for_a_box_is_found_and_terminated(settings, ec2, world):
    image_id = world["saved"].image_id
    extra = ec2.run_instances(ImageId=image_id, MinCount=1, MaxCount=1, InstanceType="g4dn.xlarge",
                              TagSpecifications=tagged("instance", "b1"))["Instances"][0]  # fmt: skip
    plan = gc.find_garbage(settings, [REGION], {"b1": world["box"].id})
    dupes = [g for g in plan.garbage if g.kind == "instance"]
    assert [g.id for g in dupes] == [extra["InstanceId"]]
    assert dupes[0].per_month > 0
    # without a record of which one is the box, neither is touched
    assert not [g for g in gc.find_garbage(settings, [REGION], {}).garbage if g.kind == "instance"]
    result = gc.collect(settings, gc.GcPlan((REGION,), tuple(dupes), ()))
    assert result.failed == ()
    state = ec2.describe_instances(InstanceIds=[extra["InstanceId"]])["Reservations"][0]
    assert state["Instances"][0]["State"]["Name"] == "terminated"
    box = ec2.describe_instances(InstanceIds=[world["box"].id])["Reservations"][0]["Instances"][0]
    assert box["State"]["Name"] == "running"


def test_unfinished_image_goes_with_its_snapshots(settings, ec2, world):
    made = ec2.create_image(InstanceId=world["box"].id, Name="half-made",
                            TagSpecifications=tagged("image", "b1"))["ImageId"]  # fmt: skip
    snaps = [m["Ebs"]["SnapshotId"] for m in
             ec2.describe_images(ImageIds=[made])["Images"][0]["BlockDeviceMappings"]]  # fmt: skip
    plan = gc.find_garbage(settings, [REGION], {"b1": world["box"].id})
    found = {(g.kind, g.id) for g in plan.garbage}
    assert ("image", made) in found and {("snapshot", s) for s in snaps} <= found
    result = gc.collect(settings, plan)
    assert result.failed == ()
    assert ec2.describe_images(Owners=["self"], ImageIds=[world["saved"].image_id])["Images"]


def test_what_a_box_left_in_another_region_is_found(settings, world):
    import boto3

    west = boto3.client("ec2", region_name="us-west-2")
    sg = west.create_security_group(GroupName="gpubox-b1", Description="x",
                                    TagSpecifications=tagged("security-group", "b1"))["GroupId"]  # fmt: skip
    keep = {"b1": world["box"].id}
    plan = gc.find_garbage(settings, [REGION, "us-west-2"], keep, {"b1": REGION})
    assert ("security-group", sg) in {(g.kind, g.id) for g in plan.garbage}
    assert all(g.box != "b1" or g.region == "us-west-2" for g in plan.garbage)
