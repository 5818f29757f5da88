"""Data volumes through moto, in-process: `up --volume`, `down` keeping them, a second box
getting the same one (in its zone, or moved there through a snapshot), grow, no shrink,
`gc`, `cost`, `volumes`, `volume rm`; run through gpubox's own entry point where the user
would type a command."""

from __future__ import annotations

import json

import pytest

from gpubox.errors import InvalidInput
from gpubox.providers.base import BoxSpec

REGION = "us-east-1"
SSH_FROM = "198.51.100.7/32"


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
def ec2(aws):
    import boto3

    return boto3.client("ec2", region_name=REGION)


def up(settings, name, volume, messages=None, **kw):
    """`box.up` without setup (no host to mount on): the box and its attached volume."""
    from gpubox import box
    from gpubox.state import State

    values = {"type": "g4dn.xlarge", "region": REGION, "ssh_from": SSH_FROM, "disk_gb": 80}
    values.update(kw)
    state = State(settings.state_path)
    try:
        return box.up(settings, state, BoxSpec(name=name, provider="aws", volume=volume, **values),
                      setup=False, on_progress=None if messages is None else messages.append)  # fmt: skip
    finally:
        state.close()


def data_volumes(ec2) -> list[dict]:
    found = ec2.describe_volumes(Filters=[{"Name": "tag-key", "Values": ["gpubox:volume"]}])
    return found["Volumes"]


def tags(resource: dict) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags", [])}


def zone_of(ec2, instance_id: str) -> str:
    found = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    return found["Placement"]["AvailabilityZone"]


@pytest.fixture
def full(monkeypatch):
    """{(zone, type)} where moto's EC2 answers InsufficientInstanceCapacity on RunInstances,
    as tests/providers/aws/test_failover.py does (moto has no capacity model)."""
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.models.instances import InstanceBackend

    places: set[tuple[str, str]] = set()
    real = InstanceBackend.run_instances

    def run_instances(self, image_id, count, user_data, security_group_names, **kwargs):
        if (kwargs.get("placement"), kwargs.get("instance_type")) in places:
            raise EC2ClientError("InsufficientInstanceCapacity", "no capacity in that zone")
        return real(self, image_id, count, user_data, security_group_names, **kwargs)

    monkeypatch.setattr(InstanceBackend, "run_instances", run_instances)
    return places


def test_up_makes_an_encrypted_tagged_gp3_volume_in_the_boxs_zone_and_attaches_it(settings, ec2):
    result = up(settings, "b1", "data:200")
    (vol,) = data_volumes(ec2)
    assert (vol["Size"], vol["VolumeType"], vol["Encrypted"]) == (200, "gp3", True)
    assert vol["AvailabilityZone"] == zone_of(ec2, result.box.id)
    assert vol["Attachments"][0]["InstanceId"] == result.box.id
    found = tags(vol)
    assert found["gpubox:volume"] == "data" and found["gpubox:kind"] == "data-volume"
    assert found["gpubox:owner"].startswith("arn:aws:")
    assert "gpubox:box" not in found  # it belongs to no box: gc never judges it
    assert result.volume.created and "not mounted" in result.message
    # Again: the same volume, nothing new.
    again = up(settings, "b1", "data:200")
    assert not again.volume.created and len(data_volumes(ec2)) == 1


def test_down_keeps_the_volume_says_what_it_costs_and_a_second_box_gets_it(
    capsys, settings, ec2, full
):
    full.add(("us-east-1a", "g4dn.xlarge"))  # b1 lands in another zone than the first
    first = up(settings, "b1", "data:200")
    full.clear()
    assert zone_of(ec2, first.box.id) != "us-east-1a"
    code, _, err = gpubox(capsys, "down", "b1", "--yes")
    assert code == 0, err
    assert "kept volume 'data' (200 GiB" in err and "/month" in err
    assert "gpubox volume rm data" in err
    (vol,) = data_volumes(ec2)
    assert vol["State"] == "available"
    messages: list[str] = []
    second = up(settings, "b2", "data", messages)
    assert zone_of(ec2, second.box.id) == zone_of(ec2, first.box.id)  # launched where it is
    (again,) = data_volumes(ec2)
    assert again["VolumeId"] == vol["VolumeId"] and again["Size"] == 200
    assert again["Attachments"][0]["InstanceId"] == second.box.id
    assert any("launching there" in m for m in messages)


def test_a_box_that_lands_in_another_zone_gets_the_volume_moved_through_a_snapshot(
    settings, ec2, full
):
    from gpubox import box
    from gpubox.state import State

    up(settings, "b1", "data:50")
    (old,) = data_volumes(ec2)
    state = State(settings.state_path)
    box.down(settings, state, "b1", yes=True)
    state.close()
    full.add((old["AvailabilityZone"], "g4dn.xlarge"))  # the volume's zone is full today
    messages: list[str] = []
    second = up(settings, "b2", "data", messages)
    zone = zone_of(ec2, second.box.id)
    assert zone != old["AvailabilityZone"]
    (moved,) = data_volumes(ec2)
    assert moved["VolumeId"] != old["VolumeId"] and moved["AvailabilityZone"] == zone
    assert (moved["Size"], moved["Encrypted"], tags(moved)["gpubox:volume"]) == (50, True, "data")
    assert moved["Attachments"][0]["InstanceId"] == second.box.id
    assert any("moving it through a snapshot" in m for m in messages)
    snaps = ec2.describe_snapshots(Filters=[{"Name": "tag-key", "Values": ["gpubox:volume"]}])
    assert snaps["Snapshots"] == []  # the move's snapshot is gone once the new volume exists


def test_a_larger_size_grows_the_volume_and_a_smaller_one_is_refused_before_launch(
    settings, ec2
):
    from gpubox import box
    from gpubox.state import State

    up(settings, "b1", "data:200")
    state = State(settings.state_path)
    box.down(settings, state, "b1", yes=True)
    state.close()
    before = ec2.describe_instances()["Reservations"]
    with pytest.raises(InvalidInput) as refused:
        up(settings, "b2", "data:100")
    assert "never shrinks" in refused.value.message and "200 GiB" in refused.value.message
    assert ec2.describe_instances()["Reservations"] == before  # no box was made
    messages: list[str] = []
    up(settings, "b2", "data:300", messages)
    (vol,) = data_volumes(ec2)
    assert vol["Size"] == 300
    assert any("growing volume 'data' from 200 to 300 GiB" in m for m in messages)


def test_gc_leaves_it_cost_counts_it_and_volumes_lists_it(capsys, settings, ec2):
    up(settings, "b1", "data:200")
    assert gpubox(capsys, "down", "b1", "--yes")[0] == 0
    (vol,) = data_volumes(ec2)
    code, out, err = gpubox(capsys, "gc", "--json")
    assert code == 0, err
    assert vol["VolumeId"] not in out
    code, out, err = gpubox(capsys, "cost", "--json", "--cached")
    assert code == 0, err
    report = json.loads(out)
    assert report["volumes_per_month"] == pytest.approx(200 * 0.08)  # gp3 us-east-1
    assert report["kept_per_month"] >= report["volumes_per_month"]
    code, out, err = gpubox(capsys, "cost", "--cached")
    assert code == 0, err
    assert "data volumes: 1, 200 GiB, about $16.00/month" in " ".join(out.split())
    code, out, err = gpubox(capsys, "volumes", "--json")
    assert code == 0, err
    (listed,) = json.loads(out)
    assert (listed["name"], listed["size_gb"], listed["zone"], listed["box"]) == (
        "data", 200, vol["AvailabilityZone"], None)  # fmt: skip
    assert listed["per_month"] == pytest.approx(16.0)
    code, out, err = gpubox(capsys, "volumes")
    assert code == 0 and "data" in out and "200 GiB" in out


def test_volumes_shows_the_box_it_is_attached_to(capsys, settings, aws):
    up(settings, "b1", "data:20")
    code, out, err = gpubox(capsys, "volumes", "--json")
    assert code == 0, err
    assert json.loads(out)[0]["box"] == "b1"


def test_volume_rm_without_yes_deletes_nothing_and_with_yes_deletes_it(capsys, settings, ec2):
    up(settings, "b1", "data:20")
    code, _, err = gpubox(capsys, "volume", "rm", "data", "--yes")
    assert code == 1 and "attached to box 'b1'" in err  # in use: refused, kept
    assert gpubox(capsys, "down", "b1", "--yes")[0] == 0
    code, _, err = gpubox(capsys, "volume", "rm", "data")  # no terminal, no --yes
    assert code == 1 and "nothing was deleted" in err
    assert len(data_volumes(ec2)) == 1
    code, _, err = gpubox(capsys, "volume", "rm", "data", "--yes")
    assert code == 0, err
    assert data_volumes(ec2) == []
    code, _, err = gpubox(capsys, "volume", "rm", "data", "--yes")
    assert code == 1 and "no volume called 'data'" in err


def test_down_delete_volume_deletes_it_with_the_box(capsys, settings, ec2):
    up(settings, "b1", "data:20")
    code, _, err = gpubox(capsys, "down", "b1", "--delete-volume")  # no yes: nothing
    assert code == 1 and len(data_volumes(ec2)) == 1
    code, _, err = gpubox(capsys, "down", "b1", "--yes", "--delete-volume")
    assert code == 0, err
    assert data_volumes(ec2) == [] and "deleted volume 'data'" in err


def test_a_volume_in_use_by_another_box_is_refused_before_launch(settings, ec2):
    from gpubox.errors import GpuboxError

    up(settings, "b1", "data:20")
    with pytest.raises(GpuboxError) as refused:
        up(settings, "b2", "data")
    assert "attached to box 'b1'" in refused.value.message
    assert "gpubox down b1" in refused.value.hint
    names = [t["Value"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]
             for t in i["Tags"] if t["Key"] == "gpubox:box"]  # fmt: skip
    assert names == ["b1"]


@pytest.mark.parametrize("text", ["Data:1", "data:0", "data:x", "data:99999"])
def test_bad_volume_requests_are_refused(text):
    from gpubox.providers.aws.volumes import parse_request

    with pytest.raises(InvalidInput):
        parse_request(text)


def test_volume_on_an_ssh_host_is_refused(capsys, aws):
    code, _, err = gpubox(capsys, "up", "h1", "--host", "me@127.0.0.1", "--volume", "data:10")
    assert code == 2
    assert "--volume is for AWS boxes" in err and "ssh host keeps its files" in err


# Races and lost state (issue 16, item 7) ------------------------------------------------


def make_volume(ec2, name: str = "data", size: int = 20, zone: str = "us-east-1a") -> str:
    """A data volume as another laptop (or an older gpubox) made it: gpubox's tags."""
    from gpubox.providers.aws.volumes import volume_tags

    made = ec2.create_volume(
        AvailabilityZone=zone, Size=size, VolumeType="gp3", Encrypted=True,
        TagSpecifications=[{"ResourceType": "volume",
                            "Tags": volume_tags(name, "arn:aws:iam::123456789012:user/other")}],
    )  # fmt: skip
    return made["VolumeId"]


def live_names(ec2) -> list[str]:
    return sorted(t["Value"] for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]
                  if i["State"]["Name"] not in ("terminated", "shutting-down")
                  for t in i["Tags"] if t["Key"] == "gpubox:box")  # fmt: skip


@pytest.mark.parametrize("text", ["", " ", ":20", "data:", "Data", "data:x"])
def test_a_malformed_volume_is_a_clear_error_before_anything_is_made(capsys, ec2, text):
    code, _, err = gpubox(capsys, "up", "b1", "--type", "g4dn.xlarge", "--no-setup",
                          "--ssh-from", SSH_FROM, "--volume", text)  # fmt: skip
    assert code == 2, err  # InvalidInput
    # An empty value is refused by the CLI's check of every option ("--volume is empty");
    # the rest by the volume's own parser, which names the form to use.
    assert "--volume is empty" in err if not text.strip() else "--volume data:200" in err, err
    assert ec2.describe_instances()["Reservations"] == []
    assert ec2.describe_security_groups(
        Filters=[{"Name": "tag-key", "Values": ["gpubox:box"]}])["SecurityGroups"] == []


def test_two_volumes_of_one_name_are_named_and_volume_rm_id_picks_one(capsys, settings, ec2):
    """Made by two `up` at once with an older gpubox: `up` names both ids and the way out
    instead of failing forever, before it launches anything; `volume rm NAME --id` keeps one."""
    first, second = make_volume(ec2), make_volume(ec2, zone="us-east-1b")
    code, _, err = gpubox(capsys, "up", "b1", "--type", "g4dn.xlarge", "--no-setup",
                          "--ssh-from", SSH_FROM, "--volume", "data")  # fmt: skip
    assert code == 1
    assert "there are 2 volumes named 'data'" in err and first in err and second in err
    spare = err.split("gpubox volume rm data --id ")[1][:21]  # one of them, attached to nothing
    assert spare in (first, second)
    assert ec2.describe_instances()["Reservations"] == []  # refused before any launch
    code, out, err = gpubox(capsys, "volumes")
    assert code == 0 and first in out and second in out
    assert "2 volumes are named 'data'" in " ".join(err.split())
    code, _, err = gpubox(capsys, "volume", "rm", "data", "--yes")
    assert code == 1 and f"--id {spare}" in err
    assert len(data_volumes(ec2)) == 2
    code, _, err = gpubox(capsys, "volume", "rm", "data", "--id", "vol-00000000", "--yes")
    assert code == 1 and "no copy vol-00000000" in err
    code, _, err = gpubox(capsys, "volume", "rm", "data", "--id", spare, "--yes")
    assert code == 0, err
    (kept,) = {first, second} - {spare}
    assert [v["VolumeId"] for v in data_volumes(ec2)] == [kept]
    result = up(settings, "b1", "data")
    assert result.volume.volume.id == kept


def test_a_new_home_lists_and_removes_a_volume_in_another_region(capsys, monkeypatch, ec2):
    """No local record of us-west-2: `volumes`, `volume rm` and `cost` ask every region."""
    import boto3

    monkeypatch.setenv("GPUBOX_AWS_REGIONS", "us-east-1,us-west-2")  # "every enabled region"
    west = boto3.client("ec2", region_name="us-west-2")
    vol_id = make_volume(west, zone="us-west-2b", size=50)
    code, out, err = gpubox(capsys, "volumes", "--json")
    assert code == 0, err
    assert [(v["name"], v["id"], v["region"]) for v in json.loads(out)] == [
        ("data", vol_id, "us-west-2")]  # fmt: skip
    code, out, err = gpubox(capsys, "cost", "--json", "--refresh")
    assert code == 0, err
    assert json.loads(out)["volumes_per_month"] == pytest.approx(50 * 0.08)
    code, _, err = gpubox(capsys, "volume", "rm", "data", "--yes")
    assert code == 0, err
    assert [v for v in west.describe_volumes()["Volumes"] if v["VolumeId"] == vol_id] == []


def test_up_in_another_region_than_the_volume_stops_before_launch(settings, monkeypatch, ec2):
    import boto3

    from gpubox.errors import GpuboxError

    monkeypatch.setenv("GPUBOX_AWS_REGIONS", "us-east-1,us-west-2")
    from gpubox import config

    make_volume(boto3.client("ec2", region_name="us-west-2"), zone="us-west-2a")
    with pytest.raises(GpuboxError) as refused:
        up(config.load(), "b1", "data")  # --region us-east-1
    assert "is in us-west-2, not us-east-1" in refused.value.message
    assert ec2.describe_instances()["Reservations"] == []


@pytest.fixture
def racer(monkeypatch):
    """What another laptop's `up` does between this one's check and its next call, done in
    moto's backend: `racer.before_create(fn)` runs fn once just before this process's
    CreateVolume, `racer.after_launch(fn)` once just after its RunInstances."""
    from moto.ec2.models import EC2Backend

    hooks: dict[str, list] = {"create_volume": [], "run_instances": []}
    for method in hooks:
        real = getattr(EC2Backend, method)

        def patched(self, *args, _real=real, _method=method, **kwargs):
            # A data volume's CreateVolume (the root disks of RunInstances pass no tags here,
            # and are 80 GiB in these tests; the data volumes are smaller).
            if _method == "create_volume" and int(kwargs.get("size") or 0) < 80:
                while hooks[_method]:
                    hooks[_method].pop(0)()
            result = _real(self, *args, **kwargs)
            if _method == "run_instances":
                while hooks[_method]:
                    hooks[_method].pop(0)()
            return result

        monkeypatch.setattr(EC2Backend, method, patched)

    class Racer:
        def before_create(self, fn):
            hooks["create_volume"].append(fn)

        def after_launch(self, fn):
            hooks["run_instances"].append(fn)

    return Racer()


def test_a_racer_that_made_the_same_new_volume_first_wins_and_the_second_is_deleted(
    settings, ec2, racer
):
    made: list[str] = []

    def another_laptop_makes_it() -> None:  # a second earlier: moto's clock is to the second
        import datetime

        from moto.ec2.models import ec2_backends

        (box,) = [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]
        made.append(make_volume(ec2, zone=box["Placement"]["AvailabilityZone"]))
        vol = ec2_backends["123456789012"]["us-east-1"].volumes[made[0]]
        vol.create_time -= datetime.timedelta(seconds=1)

    racer.before_create(another_laptop_makes_it)
    messages: list[str] = []
    result = up(settings, "b1", "data:20", messages)
    (vol,) = data_volumes(ec2)  # exactly one volume called data
    assert vol["VolumeId"] == made[0] == result.volume.volume.id  # the older one stayed
    assert vol["Attachments"][0]["InstanceId"] == result.box.id
    assert not result.volume.created
    assert any("another gpubox made volume 'data' first" in m for m in messages), "\n".join(messages)


def test_a_volume_taken_between_the_check_and_the_attach_terminates_the_box_made_for_it(
    settings, ec2, racer
):
    """Another laptop's box attached the volume while this `up` launched: the box this
    command made is terminated (nothing of it bills), and the error says so."""
    from gpubox.errors import GpuboxError

    vol_id = make_volume(ec2, zone="us-east-1a")
    other = ec2.run_instances(ImageId=ec2.describe_images(Owners=["self", "amazon"])["Images"][0]
                              ["ImageId"], MinCount=1, MaxCount=1, InstanceType="t3.micro",
                              Placement={"AvailabilityZone": "us-east-1a"},
                              TagSpecifications=[{"ResourceType": "instance", "Tags": [
                                  {"Key": "gpubox:box", "Value": "s1"}]}])["Instances"][0]  # fmt: skip
    racer.after_launch(lambda: ec2.attach_volume(VolumeId=vol_id, InstanceId=other["InstanceId"],
                                                 Device="/dev/sdf"))  # fmt: skip
    with pytest.raises(GpuboxError) as failed:
        up(settings, "b2", "data")
    assert "attached to box 's1'" in failed.value.message
    assert "box 'b2', made by this command, is terminated: nothing of it bills" in failed.value.message
    assert live_names(ec2) == ["s1"]
    assert ec2.describe_security_groups(Filters=[{"Name": "tag:gpubox:box", "Values": ["b2"]}])[
        "SecurityGroups"] == []  # fmt: skip


def test_a_stopped_box_is_not_started_for_a_volume_it_cannot_have(settings, ec2):
    from gpubox import box
    from gpubox.errors import GpuboxError
    from gpubox.state import State

    up(settings, "b1", "data:20")
    up(settings, "b2", None)
    state = State(settings.state_path)
    box.stop(settings, state, "b2")
    state.close()
    with pytest.raises(GpuboxError) as refused:
        up(settings, "b2", "data")
    assert "attached to box 'b1'" in refused.value.message
    (b2,) = [i for r in ec2.describe_instances(Filters=[{"Name": "tag:gpubox:box", "Values": ["b2"]}])[
        "Reservations"] for i in r["Instances"]]  # fmt: skip
    assert b2["State"]["Name"] == "stopped"


def test_an_empty_volume_through_the_library_is_refused_before_anything_is_made(settings, ec2):
    """box.up with volume='' (not None): an error naming the form, never a box without it."""
    with pytest.raises(InvalidInput) as refused:
        up(settings, "b1", "")
    assert "names no volume" in refused.value.message and "data:200" in refused.value.hint
    assert ec2.describe_instances()["Reservations"] == []
