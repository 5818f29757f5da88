"""`gpubox up NAME --nodes 2 --type p4d.24xlarge` on AWS, through the real command against
moto's server, with placement groups from the in-process extension (moto lacks them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.cluster.nodes import node0_sshd_of

SSH_FROM = "203.0.113.7/32"


def gpubox(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gpubox", *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, env={**os.environ, "COLUMNS": "200"},
                          timeout=180)


def ec2(endpoint: str):
    import boto3

    return boto3.client("ec2", region_name="us-east-1", endpoint_url=endpoint)


def live(endpoint: str) -> list[dict]:
    found = ec2(endpoint).describe_instances()["Reservations"]
    return [i for r in found for i in r["Instances"] if i["State"]["Name"] != "terminated"]


def tags(item: dict) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in item.get("Tags", [])}


def test_two_nodes_in_one_cluster_placement_group_and_down_removes_everything(
    endpoint, placement_groups, isolation
):
    made = gpubox("up", "duo", "--nodes", "2", "--type", "p4d.24xlarge", "--no-setup",
                  "--ssh-from", SSH_FROM, "--region", "us-east-1")
    assert made.returncode == 0, made.stderr
    client = ec2(endpoint)

    (group,) = client.describe_placement_groups()["PlacementGroups"]
    assert (group["GroupName"], group["Strategy"]) == ("gpubox-duo", "cluster")
    assert tags(group)["gpubox:box"] == "duo"

    nodes = sorted(live(endpoint), key=lambda i: tags(i)["gpubox:node"])
    assert [(tags(i)["gpubox:box"], tags(i)["gpubox:cluster"], tags(i)["gpubox:node"])
            for i in nodes] == [("duo", "duo", "0"), ("duo-1", "duo", "1")]
    assert {i["Placement"]["GroupName"] for i in nodes} == {"gpubox-duo"}
    assert len({i["Placement"]["AvailabilityZone"] for i in nodes}) == 1
    assert {i["KeyName"] for i in nodes} == {"gpubox-duo"}
    # p4d has EFA (describe_instance_types says so): each node asked for one.
    assert [[ni["InterfaceType"] for ni in nis] for nis in placement_groups] == [["efa"], ["efa"]]

    (sg,) = client.describe_security_groups(GroupNames=["gpubox-duo"])["SecurityGroups"]
    rules = sg["IpPermissions"]
    ssh = [r for r in rules if r.get("FromPort") == 22]
    assert [[x["CidrIp"] for x in r["IpRanges"]] for r in ssh] == [[SSH_FROM]]
    (nodes_rule,) = [r for r in rules if r["IpProtocol"] == "-1"]
    assert [p["GroupId"] for p in nodes_rule["UserIdGroupPairs"]] == [sg["GroupId"]]
    assert not nodes_rule["IpRanges"] and not nodes_rule.get("Ipv6Ranges")
    assert len(rules) == 2  # nothing else is open, to the world or to anyone
    assert all(x["CidrIp"] != "0.0.0.0/0" for r in rules for x in r["IpRanges"])

    listed = json.loads(gpubox("status", "--json", "--refresh").stdout)
    assert [(b["name"], b["extra"]["node"]) for b in listed] == [("duo", "0"), ("duo-1", "1")]
    billed = json.loads(gpubox("cost", "--json", "--cached").stdout)  # the nodes as one box
    assert [(b["name"], b["nodes"], len(b["node_costs"])) for b in billed["boxes"]] == [
        ("duo", 2, 2)]
    assert billed["running_per_hour"] == pytest.approx(
        sum(n["per_hour"] + n["address_per_hour"] for n in billed["boxes"][0]["node_costs"]))
    assert {b["extra"]["private_ip"] for b in listed} == {i["PrivateIpAddress"] for i in nodes}
    assert "idle guard: node 0 ('duo') stops after" not in made.stderr  # --no-setup:
    assert "each node stops on its own idle limit" in made.stderr.replace("\n", " ")
    # The other nodes' guards follow node 0 at its private IP.
    assert node0_sshd_of("duo") == f"{nodes[0]['PrivateIpAddress']}:22"

    stopped = gpubox("stop", "duo")  # every node stops and starts with the box
    assert stopped.returncode == 0, stopped.stderr
    assert {i["State"]["Name"] for i in live(endpoint)} == {"stopped"}
    started = gpubox("start", "duo")
    assert started.returncode == 0, started.stderr
    assert {i["State"]["Name"] for i in live(endpoint)} == {"running"}

    refused = gpubox("down", "duo")  # no terminal, no --yes: nothing is deleted
    assert refused.returncode != 0 and "nothing was deleted" in refused.stderr
    assert len(live(endpoint)) == 2

    down = gpubox("down", "duo", "--yes")
    assert down.returncode == 0, down.stderr
    assert live(endpoint) == []
    assert client.describe_placement_groups()["PlacementGroups"] == []
    assert not client.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": ["gpubox-duo"]}])["SecurityGroups"]
    assert not client.describe_key_pairs(
        Filters=[{"Name": "key-name", "Values": ["gpubox-duo"]}])["KeyPairs"]
    assert not (isolation / "data" / "keys" / "duo.pem").exists()
    # The month's bill keeps what the nodes ran: as one box, as before `down`.
    billed = gpubox("cost", "--json")
    assert billed.returncode == 0, billed.stderr
    rows = [(b["name"], b["nodes"], b["state"]) for b in json.loads(billed.stdout)["boxes"]]
    assert rows == [("duo", 2, "terminated")], rows


def test_a_node_that_cannot_launch_is_named_and_the_nodes_made_are_terminated(
    endpoint, placement_groups, monkeypatch
):
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.responses import EC2Response

    patched = EC2Response.run_instances
    calls: list[int] = []

    def second_has_no_room(self):
        calls.append(1)
        if len(calls) == 2:  # node 1: its group is full (as real AWS says it)
            raise EC2ClientError("InsufficientInstanceCapacity",
                                 "We currently do not have sufficient p4d.24xlarge capacity "
                                 "in the Availability Zone you requested (test).")
        return patched(self)

    monkeypatch.setattr(EC2Response, "run_instances", second_has_no_room)
    made = gpubox("up", "duo", "--nodes", "2", "--type", "p4d.24xlarge", "--no-setup",
                  "--ssh-from", SSH_FROM, "--region", "us-east-1")
    assert made.returncode != 0
    assert "node 1 ('duo-1'" in made.stderr and "capacity" in made.stderr
    assert "Traceback" not in made.stderr
    client = ec2(endpoint)
    assert live(endpoint) == []  # node 0 was made by this `up`: nothing left billing
    assert client.describe_placement_groups()["PlacementGroups"] == []
    assert not client.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": ["gpubox-duo"]}])["SecurityGroups"]


def test_efa_is_asked_for_only_where_the_type_has_it(aws_image, settings):
    from gpubox.providers.aws.instances import LaunchContext, run_params
    from gpubox.providers.base import BoxSpec

    spec = BoxSpec(name="duo-1", provider="aws", cluster="duo", node_rank=1)
    ctx = LaunchContext(settings=settings, region="us-east-1", image=aws_image, key_name="gpubox-duo",
                        group_id="sg-1", owner="me", placement_group="gpubox-duo")
    plain = run_params(ctx, spec, "g5.xlarge", "us-east-1a")
    assert plain["SecurityGroupIds"] == ["sg-1"] and "NetworkInterfaces" not in plain
    assert plain["Placement"] == {"AvailabilityZone": "us-east-1a", "GroupName": "gpubox-duo"}
    assert {"Key": "gpubox:node", "Value": "1"} in plain["TagSpecifications"][0]["Tags"]
    efa = run_params(ctx.__class__(**{**ctx.__dict__, "efa": True}), spec, "p4d.24xlarge",
                     "subnet-1")
    assert "SecurityGroupIds" not in efa and "SubnetId" not in efa
    assert efa["NetworkInterfaces"] == [{
        "DeviceIndex": 0, "InterfaceType": "efa", "Groups": ["sg-1"], "SubnetId": "subnet-1",
        "DeleteOnTermination": True, "AssociatePublicIpAddress": True}]


@pytest.fixture
def aws_image():
    from gpubox.providers.aws.images import Image

    return Image(id="ami-1", name="test", arch="x86_64", root_device_name="/dev/sda1",
                 source="ami", root_size_gb=8)
