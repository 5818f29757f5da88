"""A stopped box that cannot start: InsufficientInstanceCapacity raised inside moto's EC2
layer on StartInstances (and RunInstances), as the failover tests do, so the real error
code crosses the wire. The ways out: --wait (a test clock, no real sleeping), --type,
--move; and `up --retry-until-up` for a new box."""

from __future__ import annotations

import pytest

from gpubox.capacity import Waiting, parse_max_wait
from gpubox.errors import CapacityError, InvalidInput
from gpubox.providers.base import BoxSpec
from tests.providers.aws.test_volumes import REGION, SSH_FROM, gpubox


@pytest.fixture
def ec2(aws):
    import boto3

    return boto3.client("ec2", region_name=REGION)


class Full:
    """Where moto's EC2 now says InsufficientInstanceCapacity: (zone, type) pairs ("*" for
    any zone), and how many more refusals to give (None: until cleared)."""

    def __init__(self) -> None:
        self.places: set[tuple[str, str]] = set()
        self.refusals: int | None = None
        self.refused = 0

    def refuses(self, zone: str, kind: str) -> bool:
        if not ({(zone, kind), ("*", kind)} & self.places):
            return False
        if self.refusals is not None:
            if self.refused >= self.refusals:
                return False
        self.refused += 1
        return True


@pytest.fixture
def full(monkeypatch):
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.models.instances import InstanceBackend

    state = Full()
    real_start, real_run = InstanceBackend.start_instances, InstanceBackend.run_instances

    def refuse(zone, kind):
        raise EC2ClientError(
            "InsufficientInstanceCapacity",
            f"We currently do not have sufficient {kind} capacity in the Availability Zone "
            f"you requested ({zone}).",
        )

    def start_instances(self, instance_ids):
        for inst in self.get_multi_instances_by_id(instance_ids):
            if state.refuses(inst._placement.zone, inst.instance_type):
                refuse(inst._placement.zone, inst.instance_type)
        return real_start(self, instance_ids)

    def run_instances(self, image_id, count, user_data, security_group_names, **kwargs):
        zone, kind = kwargs.get("placement"), kwargs.get("instance_type")
        if state.refuses(zone, kind):
            refuse(zone, kind)
        return real_run(self, image_id, count, user_data, security_group_names, **kwargs)

    monkeypatch.setattr(InstanceBackend, "start_instances", start_instances)
    monkeypatch.setattr(InstanceBackend, "run_instances", run_instances)
    return state


def up(settings, name="b1", waiting=None, messages=None, **kw):
    from gpubox import box
    from gpubox.state import State

    values = {"type": "g4dn.xlarge", "region": REGION, "ssh_from": SSH_FROM, "disk_gb": 80}
    values.update(kw)
    state = State(settings.state_path)
    try:
        return box.up(settings, state, BoxSpec(name=name, provider="aws", **values), setup=False,
                      waiting=waiting,
                      on_progress=None if messages is None else messages.append).box  # fmt: skip
    finally:
        state.close()


@pytest.fixture
def stopped(settings, ec2, capsys):
    """b1, made and stopped; its instance description."""
    made = up(settings)
    assert gpubox(capsys, "stop", "b1")[0] == 0
    return describe(ec2, made.id)


def describe(ec2, instance_id):
    return ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]


def live(ec2) -> list[dict]:
    found = ec2.describe_instances(Filters=[{"Name": "instance-state-name",
                                             "Values": ["pending", "running", "stopped"]}])  # fmt: skip
    return [i for r in found["Reservations"] for i in r["Instances"]]


def tags(item) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in item.get("Tags", [])}


class Clock:
    """A test clock: sleep() moves it on at once and remembers each pause."""

    def __init__(self) -> None:
        self.now = 0.0
        self.pauses: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds


def test_no_capacity_to_start_says_so_and_names_each_way_out(capsys, ec2, stopped, full):
    full.places.add((stopped["Placement"]["AvailabilityZone"], "g4dn.xlarge"))
    code, _, err = gpubox(capsys, "start", "b1")
    text = " ".join(err.split())
    assert code == 1 and "AWS has no g4dn.xlarge capacity in" in text
    for way in ("gpubox start b1 --wait", "gpubox start b1 --type", "gpubox start b1 --move"):
        assert way in text
    assert describe(ec2, stopped["InstanceId"])["State"]["Name"] == "stopped"


def test_up_of_a_stopped_box_without_capacity_names_the_ways_out_and_can_wait(
    settings, ec2, stopped, full
):
    full.places.add(("*", "g4dn.xlarge"))
    with pytest.raises(CapacityError) as caught:
        up(settings)
    assert "--wait" in caught.value.hint and "--move" in caught.value.hint
    full.refusals = full.refused + 2  # two more refusals, then room
    clock = Clock()
    made = up(settings, waiting=Waiting(7200, sleep=clock.sleep, clock=clock.time))
    assert made.id == stopped["InstanceId"] and made.state.value == "running"
    assert clock.pauses == [15, 30]


def test_move_with_no_other_zone_offering_the_type_says_so(capsys, settings, ec2, full):
    from gpubox import box
    from gpubox.state import State

    kind = "p6-b200.48xlarge"  # moto offers it in one zone of us-east-1 only: us-east-1c
    made = up(settings, type=kind)
    assert gpubox(capsys, "stop", "b1")[0] == 0
    full.places.add(("us-east-1c", kind))
    state = State(settings.state_path)
    with pytest.raises(CapacityError) as caught:
        box.start(settings, state, "b1", move=True, yes=True)
    state.close()
    assert f"no other zone of us-east-1 offers {kind}" in caught.value.message
    assert [i["InstanceId"] for i in live(ec2)] == [made.id]
    assert ec2.describe_images(Owners=["self"])["Images"] == []


def test_wait_starts_it_when_capacity_returns_after_three_refusals(settings, ec2, stopped, full):
    from gpubox import box
    from gpubox.state import State

    full.places.add(("*", "g4dn.xlarge"))
    full.refusals = 3
    clock, messages = Clock(), []
    state = State(settings.state_path)
    started = box.start(settings, state, "b1", messages.append,
                        waiting=Waiting(1800, sleep=clock.sleep, clock=clock.time))  # fmt: skip
    state.close()
    assert started.state.value == "running" and started.id == stopped["InstanceId"]
    assert clock.pauses == [15, 30, 60]  # backoff
    assert sum("no capacity yet" in m for m in messages) == 3


def test_wait_gives_up_after_max_wait_and_says_how_long(settings, ec2, stopped, full):
    from gpubox import box
    from gpubox.state import State

    full.places.add(("*", "g4dn.xlarge"))
    clock = Clock()
    state = State(settings.state_path)
    with pytest.raises(CapacityError) as caught:
        box.start(settings, state, "b1", waiting=Waiting(600, sleep=clock.sleep, clock=clock.time))
    state.close()
    assert "still none after 7 tries over 10m" in caught.value.message  # 15+30+60+120+240+135
    assert clock.now == 600
    assert describe(ec2, stopped["InstanceId"])["State"]["Name"] == "stopped"


def test_type_starts_it_as_another_gpu_type(capsys, ec2, stopped, full):
    full.places.add(("*", "g4dn.xlarge"))
    code, _, err = gpubox(capsys, "start", "b1", "--type", "g5.xlarge")
    assert code == 0, err
    inst = describe(ec2, stopped["InstanceId"])
    assert (inst["State"]["Name"], inst["InstanceType"]) == ("running", "g5.xlarge")


def test_move_lands_in_another_zone_with_the_same_name_key_group_tags_and_volume(
    capsys, settings, ec2, full
):
    made = up(settings, volume="data:10")
    assert gpubox(capsys, "stop", "b1")[0] == 0
    old = describe(ec2, made.id)
    zone = old["Placement"]["AvailabilityZone"]
    full.places.add((zone, "g4dn.xlarge"))
    code, _, err = gpubox(capsys, "start", "b1", "--move", "--yes")
    assert code == 0, err
    (new,) = live(ec2)
    assert new["InstanceId"] != old["InstanceId"] and new["State"]["Name"] == "running"
    assert new["Placement"]["AvailabilityZone"] != zone
    assert new["InstanceType"] == "g4dn.xlarge" and new["KeyName"] == old["KeyName"]
    assert [g["GroupId"] for g in new["SecurityGroups"]] == [g["GroupId"] for g in old["SecurityGroups"]]
    assert tags(new)["gpubox:box"] == "b1" and tags(new)["gpubox:owner"] == tags(old)["gpubox:owner"]
    assert describe(ec2, old["InstanceId"])["State"]["Name"] == "terminated"  # said yes
    (vol,) = ec2.describe_volumes(Filters=[{"Name": "tag:gpubox:volume", "Values": ["data"]}])[
        "Volumes"]  # fmt: skip
    assert vol["Attachments"][0]["InstanceId"] == new["InstanceId"]
    assert vol["AvailabilityZone"] == new["Placement"]["AvailabilityZone"]
    assert ec2.describe_images(Owners=["self"])["Images"] == []  # the move's image is gone
    assert "moving it to another zone" in err


def test_move_without_a_yes_keeps_the_old_instance_as_name_old(capsys, ec2, stopped, full):
    full.places.add((stopped["Placement"]["AvailabilityZone"], "g4dn.xlarge"))
    code, _, err = gpubox(capsys, "start", "b1", "--move")  # no terminal: no yes
    assert code == 0, err
    old = describe(ec2, stopped["InstanceId"])
    assert old["State"]["Name"] == "stopped" and tags(old)["gpubox:box"] == "b1-old"
    assert "gpubox down b1-old" in " ".join(err.split())
    names = sorted(tags(i)["gpubox:box"] for i in live(ec2))
    assert names == ["b1", "b1-old"]


def test_up_retry_until_up_waits_for_capacity_for_a_new_box(settings, ec2, full):
    full.places.add(("*", "g4dn.xlarge"))
    zones = ec2.describe_instance_type_offerings(
        LocationType="availability-zone",
        Filters=[{"Name": "instance-type", "Values": ["g4dn.xlarge"]}],
    )["InstanceTypeOfferings"]
    full.refusals = len(zones) + 1  # every zone refuses once, then one more
    clock, messages = Clock(), []
    made = up(settings, waiting=Waiting(7200, sleep=clock.sleep, clock=clock.time),
              messages=messages)  # fmt: skip
    assert made.state.value == "running" and len(live(ec2)) == 1
    assert clock.pauses == [15]
    assert any("no capacity yet (try 1)" in m for m in messages)


@pytest.mark.parametrize(("text", "seconds"), [("30m", 1800), ("2h", 7200), ("1h30m", 5400),
                                               ("90s", 90), ("45", 2700)])  # fmt: skip
def test_max_wait_durations(text, seconds):
    assert parse_max_wait(text) == seconds


@pytest.mark.parametrize("text", ["soon", "0m", "25h", "1x"])
def test_bad_max_wait_is_refused(text):
    with pytest.raises(InvalidInput):
        parse_max_wait(text)
