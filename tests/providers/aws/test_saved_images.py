"""Saved images against moto: create (tagged, snapshots tagged), list, launch from, remove
(snapshots deleted too, or said why not), and the bad inputs."""

from __future__ import annotations

import pytest

from gpubox.errors import GpuboxError, InvalidInput, NotFound
from gpubox.providers.aws import saved_images as si
from gpubox.providers.base import BoxSpec

REGION = "us-east-1"


def tags(resource):
    return {t["Key"]: t["Value"] for t in resource.get("Tags", [])}


@pytest.fixture
def box(provider):
    """A real box made by the AWS provider (instance, key pair, security group, tags)."""
    spec = BoxSpec(name="b1", provider="aws", type="g4dn.xlarge", region=REGION,
                   ssh_from="198.51.100.7/32", disk_gb=80)  # fmt: skip
    return provider.launch(spec)


def my_images(ec2):
    return ec2.describe_images(Owners=["self"])["Images"]


def test_image_of_a_running_box_is_tagged_listed_and_resolvable(settings, ec2, box):
    said = []
    made = si.create_saved_image(settings, REGION, "b1", "d2l-ready", on_progress=said.append)
    assert made.stopped_box is False and made.consistent is False
    image = made.image
    assert (image.name, image.region, image.state, image.box) == (
        "d2l-ready",
        REGION,
        "available",
        "b1",
    )
    found = ec2.describe_images(ImageIds=[image.image_id])["Images"][0]
    # The size is what the image's mappings say (moto says 15 GB for any disk; AWS the disk's).
    assert image.size_gb == sum(m["Ebs"]["VolumeSize"] for m in found["BlockDeviceMappings"])
    assert image.snapshot_ids
    assert tags(found)["gpubox:image"] == "d2l-ready"
    assert tags(found)["gpubox:box"] == "b1" and tags(found)["gpubox:kind"] == "image"
    assert tags(found)["gpubox:owner"].startswith("arn:aws:")
    snaps = ec2.describe_snapshots(SnapshotIds=list(image.snapshot_ids))["Snapshots"]
    assert {tags(s)["gpubox:kind"] for s in snaps} == {"snapshot"}
    assert {tags(s)["gpubox:image"] for s in snaps} == {"d2l-ready"}
    assert any("available" in line for line in said)
    # the box keeps running: no reboot, no stop without being asked
    inst = ec2.describe_instances(InstanceIds=[box.id])["Reservations"][0]["Instances"][0]
    assert inst["State"]["Name"] == "running"

    listed = si.list_saved_images(settings, [REGION, "us-west-2"])
    assert [i.image_id for i in listed] == [image.image_id]

    from gpubox.providers.aws.images import resolve_image

    assert resolve_image(settings, REGION, "d2l-ready", "x86_64").id == image.image_id


def test_stop_first_stops_the_box_and_leaves_it_stopped(settings, ec2, box):
    made = si.create_saved_image(settings, REGION, "b1", "clean", stop_first=True)
    assert made.stopped_box and made.consistent
    inst = ec2.describe_instances(InstanceIds=[box.id])["Reservations"][0]["Instances"][0]
    assert inst["State"]["Name"] == "stopped"


def test_name_clash_is_refused_and_makes_nothing(settings, ec2, box):
    si.create_saved_image(settings, REGION, "b1", "base")
    with pytest.raises(InvalidInput, match="already exists") as caught:
        si.create_saved_image(settings, REGION, "b1", "base")
    assert "gpubox image rm base" in caught.value.hint
    assert len(my_images(ec2)) == 1


def test_image_of_a_box_that_does_not_exist(settings, ec2, aws):
    with pytest.raises(NotFound, match="no box called 'ghost'"):
        si.create_saved_image(settings, REGION, "ghost", "x")
    assert my_images(ec2) == []


def test_bad_image_name(settings, aws):
    with pytest.raises(InvalidInput, match="not a valid image name"):
        si.create_saved_image(settings, REGION, "b1", "no spaces/please")


def test_a_failed_image_is_removed_with_its_snapshots(settings, ec2, box, monkeypatch):
    """AWS marks the image failed (injected into moto's backend): nothing is left behind."""
    from moto.ec2.models.amis import AmiBackend

    real_create = AmiBackend.create_image

    def create_then_fail(self, *args, **kwargs):
        ami = real_create(self, *args, **kwargs)
        ami.state = "failed"
        return ami

    monkeypatch.setattr(AmiBackend, "create_image", create_then_fail)
    before = {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    with pytest.raises(GpuboxError, match="could not make image"):
        si.create_saved_image(settings, REGION, "b1", "doomed")
    assert my_images(ec2) == []
    after = {s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    assert after == before


def test_remove_deletes_image_and_snapshots_and_names_boxes_launched_from_it(
    settings, ec2, box, provider
):
    image = si.create_saved_image(settings, REGION, "b1", "keep-me").image
    child = provider.launch(BoxSpec(name="b2", provider="aws", type="g4dn.xlarge", region=REGION,
                                    image="keep-me", ssh_from="198.51.100.7/32"))  # fmt: skip
    assert child.image_id == image.image_id

    found = si.find_saved_image(settings, [REGION], "keep-me")
    removal = si.remove_saved_image(settings, found)
    assert removal.deregistered and removal.failed == ()
    assert set(removal.deleted_snapshots) == set(image.snapshot_ids)
    assert removal.used_by == ("b2",)  # allowed, and said
    assert my_images(ec2) == []
    left = ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]
    assert not {s["SnapshotId"] for s in left} & set(image.snapshot_ids)


def test_remove_says_which_snapshot_it_could_not_delete(settings, ec2, box, monkeypatch):
    image = si.create_saved_image(settings, REGION, "b1", "shared").image
    snapshot = image.snapshot_ids[0]
    # AWS refuses while another AMI uses the snapshot; moto does not track that, so the
    # real error code is raised from moto's EBS layer for this one snapshot.
    from moto.ec2.exceptions import InvalidSnapshotInUse
    from moto.ec2.models.elastic_block_store import EBSBackend

    real_delete = EBSBackend.delete_snapshot

    def in_use(self, snapshot_id):
        if snapshot_id == snapshot:
            raise InvalidSnapshotInUse(snapshot_id, "ami-0someoneelse0")
        return real_delete(self, snapshot_id)

    monkeypatch.setattr(EBSBackend, "delete_snapshot", in_use)
    removal = si.remove_saved_image(settings, image)
    assert removal.deregistered
    assert list(removal.failed) == [(snapshot, "InvalidSnapshot.InUse")]
    assert my_images(ec2) == []


def test_find_unknown_image_suggests_a_close_name(settings, box):
    si.create_saved_image(settings, REGION, "b1", "d2l-ready")
    with pytest.raises(NotFound) as caught:
        si.find_saved_image(settings, [REGION], "d2l-redy")
    assert "d2l-ready" in caught.value.hint
