"""`gpubox doctor --live` and `--policy`, the real command against moto's server.

moto answers DryRun=True with DryRunOperation for the EC2 calls it implements, and
enforces no IAM in this mode: a denied call is injected into moto's EC2 layer (in this
process, which the ThreadedMotoServer shares) with AWS's UnauthorizedOperation. moto
lacks placement groups (tests/cluster/moto_placement.py adds them; their dry run is
added here), the Price List API and most of Service Quotas: those rows say "not checked"
with moto's own answer.
"""

from __future__ import annotations

import json

import pytest

from gpubox.providers.aws import permissions
from tests.cli.test_aws_subprocess import SSH_FROM, endpoint, gpubox  # noqa: F401
from tests.cluster.moto_placement import placement_groups  # noqa: F401

# moto has no answer for these (or there is nothing of that kind for the check to use).
MOTO_LACKS = {"pricing:GetProducts", "service-quotas:GetServiceQuota",
              "service-quotas:GetAWSDefaultServiceQuota",
              "service-quotas:ListRequestedServiceQuotaChangeHistoryByQuota"}
NOTHING_TO_CHECK_ON = {"ec2:CancelSpotInstanceRequests", "ec2:DeregisterImage",
                       "ec2:DeleteSnapshot", "ec2:ReleaseAddress", "ec2:DeletePlacementGroup",
                       "service-quotas:RequestServiceQuotaIncrease"}


@pytest.fixture
def dry_placement(placement_groups, monkeypatch):  # noqa: F811
    """The placement-group extension, answering DryRun as moto's own EC2 calls do."""
    from moto.ec2.responses import EC2Response

    for name in ("create_placement_group", "delete_placement_group"):
        made = getattr(EC2Response, name)

        def dry(self, made=made):
            self.error_on_dryrun()
            return made(self)

        monkeypatch.setattr(EC2Response, name, dry)


@pytest.fixture
def deny(monkeypatch):
    """deny({"CreatePlacementGroup"}): moto's EC2 answers those with UnauthorizedOperation
    (raised where moto raises its own EC2 errors, so moto serializes it as AWS would)."""
    from moto.core.utils import camelcase_to_underscores
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.responses import EC2Response

    def refuse(self):
        raise EC2ClientError("UnauthorizedOperation",
                             "You are not authorized to perform this operation.")

    def deny(actions: set[str]) -> None:
        for action in actions:
            monkeypatch.setattr(EC2Response, camelcase_to_underscores(action), refuse)

    return deny


def inventory(url: str) -> dict[str, list]:
    """Everything in moto's us-east-1 that a check could make, by id."""
    import boto3

    ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=url)
    reservations = ec2.describe_instances()["Reservations"]
    return {
        "instances": sorted((i["InstanceId"], i["State"]["Name"])
                            for r in reservations for i in r["Instances"]),
        "volumes": sorted(v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]),
        "groups": sorted(g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"]),
        "rules": sorted(str(g["IpPermissions"])
                        for g in ec2.describe_security_groups()["SecurityGroups"]),
        "keys": sorted(k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]),
        "images": sorted(i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]),
        "snapshots": sorted(s["SnapshotId"]
                            for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]),
        "placement": sorted(g["GroupName"]
                            for g in ec2.describe_placement_groups()["PlacementGroups"]),
        "tags": sorted(str(t) for t in ec2.describe_tags()["Tags"]),
    }


def live(*extra: str) -> tuple[dict, object]:
    done = gpubox("doctor", "--live", "--json", "--region", "us-east-1", *extra)
    assert done.returncode in (0, 1), done.stderr
    return json.loads(done.stdout), done


@pytest.fixture
def a_box(endpoint, dry_placement):  # noqa: F811
    """A box with a data volume: every check that needs one of gpubox's has one."""
    up = gpubox("up", "b1", "--type", "g4dn.xlarge", "--no-setup", "--ssh-from", SSH_FROM,
                "--volume", "data:2")
    assert up.returncode == 0, up.stderr
    return endpoint


def test_live_check_allows_every_call_and_makes_nothing(a_box):
    before = inventory(a_box)
    report, done = live()
    assert inventory(a_box) == before  # nothing made, changed or removed
    verdicts = {r["call"]: r for r in report["results"]}
    assert set(verdicts) == {p.call for p in permissions.PERMISSIONS}
    allowed = {c for c, r in verdicts.items() if r["verdict"] == "allowed"}
    assert allowed == set(verdicts) - MOTO_LACKS - NOTHING_TO_CHECK_ON, report
    for call in MOTO_LACKS | NOTHING_TO_CHECK_ON:
        assert verdicts[call]["verdict"] == "not checked" and verdicts[call]["detail"], call
    assert "RunInstances" in {c.split(":")[1] for c in allowed}
    assert report["summary"].startswith("every checked call is allowed in us-east-1")
    assert done.returncode == 0
    # The time is measured and reported (not asserted: this machine is shared).
    assert report["seconds"] > 0


def test_a_denied_call_is_named_with_what_gpubox_cannot_do_without_it(a_box, deny):
    deny({"CreatePlacementGroup"})
    before = inventory(a_box)
    report, done = live()
    assert inventory(a_box) == before
    denied = [r for r in report["results"] if r["verdict"] == "denied"]
    assert [(r["iam_action"], r["detail"]) for r in denied] == [
        ("ec2:CreatePlacementGroup", "UnauthorizedOperation")]
    assert report["summary"] == "without ec2:CreatePlacementGroup: no --nodes; everything else works"
    assert done.returncode == 0  # a box of one node still works

    table = gpubox("doctor", "--live", "--region", "us-east-1")
    assert table.returncode == 0, table.stderr
    assert "DENIED" in table.stdout and "ec2:CreatePlacementGroup" in table.stdout
    assert "without ec2:CreatePlacementGroup: no --nodes; everything else works" in table.stderr


def test_a_denied_launch_fails_the_command(a_box, deny):
    deny({"RunInstances", "StopInstances"})
    report, done = live()
    denied = {r["iam_action"] for r in report["results"] if r["verdict"] == "denied"}
    assert denied == {"ec2:RunInstances", "ec2:StopInstances"}
    assert "without ec2:RunInstances, ec2:StopInstances: " in report["summary"]
    assert "everything else works" not in report["summary"]
    assert done.returncode == 1


def test_with_no_box_yet_the_calls_on_a_box_are_said_unchecked(endpoint, dry_placement):  # noqa: F811
    report, _ = live()
    verdicts = {r["call"]: r for r in report["results"]}
    assert verdicts["ec2:RunInstances"]["verdict"] == "allowed"
    assert verdicts["ec2:StopInstances"]["verdict"] == "not checked"
    assert "no instance of gpubox's in us-east-1" in verdicts["ec2:StopInstances"]["detail"]


def test_policy_holds_exactly_the_tables_actions_scoped_by_gpubox_tags():
    done = gpubox("doctor", "--policy")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert permissions.policy_actions(document) == {p.iam_action for p in permissions.PERMISSIONS}
    by_sid = {s["Sid"]: s for s in document["Statement"]}
    assert len(by_sid) == len(document["Statement"])
    launch = [s for s in document["Statement"] if "ec2:RunInstances" in s["Action"]]
    tagged = [s for s in launch if "Condition" in s]
    assert tagged and all(
        s["Condition"] == {"StringLike": {"aws:RequestTag/gpubox:kind": "?*"}} for s in tagged)
    assert {r for s in tagged for r in s["Resource"]} == {
        "arn:aws:ec2:*:*:instance/*", "arn:aws:ec2:*:*:volume/*"}
    terminate = [s for s in document["Statement"] if "ec2:TerminateInstances" in s["Action"]]
    assert [s["Condition"] for s in terminate] == [
        {"StringLike": {"aws:ResourceTag/gpubox:kind": "?*"}}]
    tagging = [s["Condition"] for s in document["Statement"]
               if "ec2:CreateTags" in s["Action"] and "StringEquals" in s.get("Condition", {})]
    assert "RunInstances" in tagging[0]["StringEquals"]["ec2:CreateAction"]


def test_policy_per_feature_and_an_unknown_feature():
    nodes = json.loads(gpubox("doctor", "--policy", "--feature", "nodes").stdout)
    actions = permissions.policy_actions(nodes)
    assert "ec2:CreatePlacementGroup" in actions and "ec2:RunInstances" in actions
    assert "ec2:CreateImage" not in actions and "servicequotas:GetServiceQuota" not in actions
    bad = gpubox("doctor", "--policy", "--feature", "gpus")
    assert bad.returncode != 0 and "unknown feature: gpus" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_without_credentials_it_is_one_line_saying_so():
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ACCESS_KEY")
           and k not in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")}
    done = gpubox("doctor", "--live", "--json", "--region", "us-east-1", env=env)
    assert done.returncode != 0 and "no usable AWS credentials" in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
