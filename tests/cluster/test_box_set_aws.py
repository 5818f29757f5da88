"""A box is everything it owns in AWS (providers/aws/resources.py): the real `gpubox`
command against moto's server (placement groups from tests/cluster/moto_placement.py),
with real signals where a command is cut short.

The types here are g4dn.xlarge, which has no EFA: moto shows no security groups for an
instance launched with an EFA interface (p4d, g5.12xlarge), so it would let a group in
use be deleted, and the security-group cases below would prove nothing.
"""

from __future__ import annotations

import json
import re
import shlex
import signal

import pytest

from tests.cli.test_interrupts import slow, start, wait_until  # noqa: F401 - slow: a fixture
from tests.cluster.test_nodes_aws import SSH_FROM, ec2, gpubox, live, tags

UP3 = ("up", "t", "--nodes", "3", "--type", "g4dn.xlarge", "--no-setup", "--ssh-from",
       SSH_FROM, "--region", "us-east-1")


def by_rank(url: str) -> list[dict]:
    return sorted(live(url), key=lambda i: (tags(i).get("gpubox:cluster", ""),
                                                 int(tags(i).get("gpubox:node", "0"))))


def tagged(url: str) -> list[str]:
    """Everything tagged by gpubox that still exists (terminated instances aside)."""
    client = ec2(url)
    mine = [{"Name": "tag-key", "Values": ["gpubox:box"]}]
    found = [i["InstanceId"] for i in live(url)]
    found += [g["GroupId"] for g in client.describe_security_groups(Filters=mine)["SecurityGroups"]]
    found += [k["KeyName"] for k in client.describe_key_pairs(Filters=mine)["KeyPairs"]]
    found += [g["GroupName"] for g in client.describe_placement_groups()["PlacementGroups"]]
    return found


def gc_kinds(box: str) -> list[str]:
    listed = gpubox("gc", "--json")
    assert listed.returncode == 0, listed.stderr
    return sorted(g["kind"] for g in json.loads(listed.stdout)["garbage"] if g["box"] == box)


def printed(text: str, what: str) -> list[str]:
    """The command printed after 'finish it:' or 'undo it:', as argv (without 'gpubox')."""
    found = re.search(rf"{what} it:\s+gpubox (.+)", text)
    assert found, text
    return shlex.split(found.group(1))


def test_node0_terminated_elsewhere_down_takes_every_node_and_keeps_the_key_until_then(
    endpoint, isolation
):
    made = gpubox(*UP3)
    assert made.returncode == 0, made.stderr
    nodes = by_rank(endpoint)
    assert [tags(i)["gpubox:box"] for i in nodes] == ["t", "t-1", "t-2"]
    ec2(endpoint).terminate_instances(InstanceIds=[nodes[0]["InstanceId"]])  # the console

    # gc: the group, key pair and placement group are still used by nodes 1 and 2.
    assert gc_kinds("t") == []
    status = gpubox("status", "t", "--json")
    assert status.returncode == 0, status.stderr
    assert [b["name"] for b in json.loads(status.stdout)] == ["t-1", "t-2"]
    stop = gpubox("stop", "t")  # what is left of the box stops (money first)
    assert stop.returncode == 0, stop.stderr
    assert {i["State"]["Name"] for i in live(endpoint)} == {"stopped"}
    started = gpubox("start", "t")
    assert started.returncode != 0
    assert "node 0 of 't' is gone (terminated outside gpubox)" in started.stderr
    assert "`gpubox down t --yes` removes them" in started.stderr
    down = gpubox("down", "t", "--yes")
    assert down.returncode == 0, down.stderr
    assert "removed what was left" not in down.stderr
    assert "all 2 nodes (t, t-1, t-2)" not in down.stderr  # node 0 was gone already
    assert "terminated 't'" in down.stderr
    assert live(endpoint) == [] and tagged(endpoint) == []
    assert not (isolation / "data" / "keys" / "t.pem").exists()
    again = gpubox("down", "t", "--yes")  # nothing left: said, not a second success
    assert again.returncode != 0 and "no box called 't'" in again.stderr


def test_down_of_a_node_name_is_refused_with_the_box_named(endpoint, isolation):
    assert gpubox(*UP3).returncode == 0
    refused = gpubox("down", "t-1", "--yes")
    assert refused.returncode != 0, refused.stderr
    assert "'t-1' is node 1 of box 't'" in refused.stderr
    assert "`gpubox down t --yes` removes all 3 nodes" in refused.stderr
    assert len(live(endpoint)) == 3
    stop = gpubox("stop", "t-2")
    assert stop.returncode != 0 and "`gpubox stop t` stops all 3 nodes" in stop.stderr
    down = gpubox("down", "t", "--yes")
    assert down.returncode == 0, down.stderr
    assert "terminated 't': all 3 nodes (t, t-1, t-2)" in down.stderr
    assert tagged(endpoint) == []


def test_up_nodes_on_a_one_machine_box_is_refused_and_orphans_nothing(endpoint, isolation):
    one = gpubox("up", "x", "--type", "g4dn.xlarge", "--no-setup", "--ssh-from", SSH_FROM)
    assert one.returncode == 0, one.stderr
    grow = gpubox("up", "x", "--nodes", "3", "--type", "g4dn.xlarge", "--no-setup",
                  "--ssh-from", SSH_FROM)
    assert grow.returncode != 0
    assert "box 'x' exists as one machine" in grow.stderr and "nothing was made" in grow.stderr
    assert [tags(i)["gpubox:box"] for i in live(endpoint)] == ["x"]
    assert ec2(endpoint).describe_placement_groups()["PlacementGroups"] == []


def test_up_of_several_nodes_never_adopts_another_box_named_like_a_node(endpoint, isolation):
    other = gpubox("up", "y-1", "--type", "g4dn.xlarge", "--no-setup", "--ssh-from", SSH_FROM)
    assert other.returncode == 0, other.stderr
    made = gpubox("up", "y", "--nodes", "2", "--type", "g4dn.xlarge", "--no-setup",
                  "--ssh-from", SSH_FROM)
    assert made.returncode != 0
    assert "would be called 'y-1', and another box has that name" in made.stderr
    assert [tags(i)["gpubox:box"] for i in live(endpoint)] == ["y-1"]
    assert "gpubox:cluster" not in tags(live(endpoint)[0])


def test_up_of_a_node_name_is_refused(endpoint, isolation):
    assert gpubox(*UP3[:3], "2", *UP3[4:]).returncode == 0  # t with 2 nodes
    node = gpubox("up", "t-1", "--type", "g4dn.xlarge", "--no-setup", "--ssh-from", SSH_FROM)
    assert node.returncode != 0 and "'t-1' is node 1 of box 't'" in node.stderr
    assert len(live(endpoint)) == 2


def test_up_grows_a_box_of_several_nodes_into_the_same_box(endpoint, isolation):
    assert gpubox(*UP3[:3], "2", *UP3[4:]).returncode == 0
    grown = gpubox(*UP3)
    assert grown.returncode == 0, grown.stderr
    nodes = by_rank(endpoint)
    assert [(tags(i)["gpubox:box"], tags(i)["gpubox:cluster"]) for i in nodes] == [
        ("t", "t"), ("t-1", "t"), ("t-2", "t")]
    assert {i["Placement"]["GroupName"] for i in nodes} == {"gpubox-t"}
    shrink = gpubox(*UP3[:3], "2", *UP3[4:])
    assert shrink.returncode != 0 and "box 't' has 3 nodes" in shrink.stderr
    assert gpubox("down", "t", "--yes").returncode == 0
    assert tagged(endpoint) == []


def test_stop_says_the_disks_of_all_nodes(endpoint, isolation):
    assert gpubox(*UP3).returncode == 0
    stopped = gpubox("stop", "t")
    assert stopped.returncode == 0, stopped.stderr
    text = " ".join((stopped.stderr + stopped.stdout).split())
    assert "'t' is stopped (all 3 nodes)" in text
    assert "the disks of its 3 nodes (64 + 64 + 64 GB), about $15.36/month" in text
    assert {i["State"]["Name"] for i in live(endpoint)} == {"stopped"}


def test_start_when_a_node_has_no_capacity_stops_the_others_again(endpoint, isolation,
                                                                   monkeypatch):
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.models.instances import InstanceBackend

    assert gpubox(*UP3).returncode == 0
    assert gpubox("stop", "t").returncode == 0
    node1 = by_rank(endpoint)[1]["InstanceId"]
    real = InstanceBackend.start_instances

    def no_room_for_node1(self, instance_ids):
        if node1 in instance_ids:
            raise EC2ClientError("InsufficientInstanceCapacity",
                                 "We currently do not have sufficient g4dn.xlarge capacity in "
                                 "the Availability Zone you requested (test).")
        return real(self, instance_ids)

    monkeypatch.setattr(InstanceBackend, "start_instances", no_room_for_node1)
    started = gpubox("start", "t")
    assert started.returncode != 0
    text = " ".join(started.stderr.split())
    assert "node 1 ('t-1') of 't' could not start" in text
    assert "stopped again the nodes this start had started (t)" in text
    assert "`gpubox start t --wait`" in text
    assert {i["State"]["Name"] for i in live(endpoint)} == {"stopped"}  # none left running


def test_start_move_and_resize_of_several_nodes_are_refused_before_anything_changes(
    endpoint, isolation
):
    assert gpubox(*UP3[:3], "2", *UP3[4:]).returncode == 0
    assert gpubox("stop", "t").returncode == 0
    moved = gpubox("start", "t", "--move", "--yes")
    assert moved.returncode != 0 and "'t' has 2 nodes; `start --move`" in moved.stderr
    resized = gpubox("resize", "t", "--type", "g5.xlarge", "--yes")
    assert resized.returncode != 0 and "of several nodes" in resized.stderr, resized.stderr
    assert {(i["InstanceType"], i["State"]["Name"]) for i in live(endpoint)} == {
        ("g4dn.xlarge", "stopped")}
    assert gpubox("down", "t", "--yes").returncode == 0


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("then", ["undo", "finish"])
def test_a_signal_while_node1_launches_tells_every_node_and_both_commands_work(
    endpoint, isolation, slow, signum, then  # noqa: F811 - slow: the fixture
):
    from moto.ec2.models import EC2Backend

    undo_slow = slow(EC2Backend, "run_instances",
                     when=lambda *a, **k: any(t.get("gpubox:node") == "1"
                                              for t in k.get("tags", {}).values()))
    proc = start(*UP3)
    try:
        wait_until(lambda: proc.poll() is not None or len(live(endpoint)) >= 2)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    undo_slow()
    assert proc.returncode == 128 + signum, err
    text = " ".join(err.split())
    assert "what 't' owns in AWS now:" in text, err
    assert "node 0 't', g4dn.xlarge, running" in text and "node 1 't-1'" in text
    assert "$0.531/h" in text  # node 0's compute and address, as AWS bills it
    assert "placement group gpubox-t" in text and "security group sg-" in text
    assert "undo it: gpubox down t --yes" in text
    command = printed(err, then)
    assert command[:2] == (["down", "t"] if then == "undo" else ["up", "t"])
    done = gpubox(*command)
    assert done.returncode == 0, done.stderr
    if then == "undo":
        assert tagged(endpoint) == []
        assert not (isolation / "data" / "keys" / "t.pem").exists()
    else:
        assert [tags(i)["gpubox:box"] for i in by_rank(endpoint)] == ["t", "t-1", "t-2"]


@pytest.mark.slow
def test_a_signal_just_after_the_placement_group_is_made_tells_it_and_down_and_gc_see_it(
    endpoint, isolation, monkeypatch
):
    import threading

    from moto.ec2.responses import EC2Response

    real = EC2Response.create_placement_group
    release = threading.Event()

    def slowed(self):
        answer = real(self)
        release.wait(30)
        return answer

    monkeypatch.setattr(EC2Response, "create_placement_group", slowed, raising=False)
    proc = start(*UP3)
    try:
        wait_until(lambda: proc.poll() is not None
                   or ec2(endpoint).describe_placement_groups()["PlacementGroups"])
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        release.set()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "placement group gpubox-t" in err, err
    assert "nothing is left" not in err
    assert "placement-group" in gc_kinds("t")
    down = gpubox(*printed(err, "undo"))
    assert down.returncode == 0, down.stderr
    assert tagged(endpoint) == []


@pytest.fixture
def slow_termination(monkeypatch):
    """moto's terminate leaves the instance shutting-down for 8 s, as EC2 does for a while
    (moto otherwise ends it at once)."""
    import threading

    from moto.ec2.models.instances import Instance

    real = Instance.terminate
    timers: list[threading.Timer] = []

    def terminate(self):
        if self._state.name in ("shutting-down", "terminated"):
            return real(self) if self._state.name == "terminated" else self._state
        self._state.name, self._state.code = "shutting-down", 32
        timer = threading.Timer(8.0, real, args=(self,))
        timers.append(timer)
        timer.start()
        return self._state

    monkeypatch.setattr(Instance, "terminate", terminate)
    yield
    for timer in timers:
        timer.cancel()


@pytest.mark.slow
def test_a_second_down_while_the_first_ones_instance_shuts_down_waits_and_removes_all(
    endpoint, isolation, slow_termination
):
    made = gpubox("up", "s", "--type", "g4dn.xlarge", "--no-setup", "--ssh-from", SSH_FROM)
    assert made.returncode == 0, made.stderr
    proc = start("down", "s", "--yes")
    try:
        wait_until(lambda: proc.poll() is not None or any(
            i["State"]["Name"] == "shutting-down"
            for i in ec2(endpoint).describe_instances()["Reservations"][0]["Instances"]))
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    text = " ".join(err.split())
    assert "shutting-down" in text and "finish it: gpubox down s --yes" in text, err
    again = gpubox(*printed(err, "finish"))  # the instance is still shutting down
    assert again.returncode == 0, again.stderr
    assert "to be terminated" in again.stderr, again.stderr  # it waited, then removed the rest
    assert tagged(endpoint) == []
    assert not (isolation / "data" / "keys" / "s.pem").exists()


@pytest.mark.slow
def test_a_signal_during_a_move_tells_both_instances_apart_and_the_finish_converges(
    endpoint, isolation, slow, monkeypatch  # noqa: F811 - slow: the fixture
):
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.models import EC2Backend
    from moto.ec2.models.instances import InstanceBackend

    made = gpubox("up", "a", "--type", "g4dn.xlarge", "--no-setup", "--ssh-from", SSH_FROM)
    assert made.returncode == 0, made.stderr
    assert gpubox("stop", "a").returncode == 0
    (old,) = live(endpoint)
    real_start = InstanceBackend.start_instances

    def no_room_for_the_old_one(self, instance_ids):
        if old["InstanceId"] in instance_ids:  # its zone is full
            raise EC2ClientError("InsufficientInstanceCapacity",
                                 "We currently do not have sufficient g4dn.xlarge capacity in "
                                 "the Availability Zone you requested (test).")
        return real_start(self, instance_ids)

    monkeypatch.setattr(InstanceBackend, "start_instances", no_room_for_the_old_one)
    undo_slow = slow(EC2Backend, "run_instances")  # the move's launch, caught once it is made
    proc = start("start", "a", "--move")
    try:
        wait_until(lambda: proc.poll() is not None or len(live(endpoint)) == 2)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    undo_slow()
    assert proc.returncode == 130, err
    text = " ".join(err.split())
    assert f"instance {old['InstanceId']}" in text, err
    assert "the box's instance (the oldest; a move copies it)" in text
    assert "a move's new one" in text
    assert "undo it: gpubox stop" not in text  # stopping would leave both instances
    again = gpubox(*printed(err, "finish"))
    assert again.returncode == 0, again.stderr
    named = sorted((tags(i)["gpubox:box"], i["State"]["Name"]) for i in live(endpoint))
    assert named == [("a", "running"), ("a-old", "stopped")], named


def test_stop_counts_the_data_volume_with_the_disks(endpoint, isolation):
    made = gpubox("up", "v", "--type", "g4dn.xlarge", "--volume", "d:10", "--no-setup",
                  "--ssh-from", SSH_FROM, "--region", "us-east-1")
    assert made.returncode == 0, made.stderr
    stopped = gpubox("stop", "v")
    assert stopped.returncode == 0, stopped.stderr
    text = " ".join((stopped.stderr + stopped.stdout).split())
    # 64 GB + 10 GiB of gp3 at $0.08/GB-month (the price snapshot)
    assert "its 64 GB disk and data volume 'd' (10 GiB), about $5.92/month" in text, text
