"""Every AWS call gpubox makes, in one table: its IAM action, the feature that needs it,
what gpubox cannot do without it, how `gpubox doctor --live` checks it, and how far
IAM lets a policy narrow it to what gpubox made (its `gpubox:kind` tag).

The same table makes the least-privilege policy (`gpubox doctor --policy`), runs the
live check (livecheck.py), and is what the suite's recorded AWS calls are compared
with (tests/aws_calls.py): a call the code makes that is not here fails the suite,
and so does an entry here that no code calls.

Tag scoping. Every resource gpubox makes carries `gpubox:kind` (docs/conventions.md);
`gpubox:box` is on everything but data volumes, which outlive their box, so the
policy's conditions name `gpubox:kind`. A create is allowed only with that tag in the
request (aws:RequestTag), and ec2:CreateTags only as part of such a create
(ec2:CreateAction), on a resource gpubox made already (aws:ResourceTag), or, for
snapshots (tagged just after CreateImage makes them), with gpubox's tag in the request.
Describe calls and the other services' reads cannot be narrowed by IAM: Resource "*".
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

# How an entry is checked live.
DRY_RUN = "dry-run"  # the call itself with DryRun=True: AWS answers DryRunOperation or a denial
READ = "read"  # a real read-only call (it changes nothing and bills nothing)
NONE = "none"  # no way to ask without doing it

# IAM's service prefix for each botocore service name.
IAM_PREFIX = {
    "ec2": "ec2",
    "sts": "sts",
    "ssm": "ssm",
    "pricing": "pricing",
    "service-quotas": "servicequotas",
    "resourcegroupstaggingapi": "tag",
}

# What each feature is, in the words `doctor --policy --feature` and the docs use.
FEATURES = {
    "core": "up, status, stop, start, down, ssh: one box, end to end",
    "spot": "--spot boxes",
    "prices": "live on-demand and spot prices (else the shipped snapshot)",
    "quotas": "reading vCPU quotas before a launch, and `gpubox quota request`",
    "nodes": "boxes of several machines (--nodes)",
    "volumes": "data volumes (--volume, `gpubox volume`) and moves between zones",
    "images": "saved images (`gpubox image`)",
    "resize": "`gpubox resize` (another type, a bigger disk)",
    "gc": "`gpubox gc`: what gpubox left behind",
}

TAG_KEY = "gpubox:kind"  # on every resource gpubox makes (docs/conventions.md)

# Condition kinds of a grant.
ANY = ""  # no condition
REQUEST_TAG = "request-tag"  # the create call carries gpubox's tag
RESOURCE_TAG = "resource-tag"  # the resource is gpubox's already
CREATE_ACTION = "create-action"  # CreateTags as part of one of gpubox's creates


@dataclass(frozen=True)
class Grant:
    """Resources (IAM resource types; "*" for all) an action is allowed on, and when."""

    resources: tuple[str, ...] = ("*",)
    condition: str = ANY


@dataclass(frozen=True)
class Permission:
    service: str  # botocore's service name
    operation: str  # the API operation, as IAM names the action
    feature: str  # a key of FEATURES
    check: str  # DRY_RUN, READ or NONE
    disables: str  # what gpubox cannot do without it
    grants: tuple[Grant, ...] = (Grant(),)
    also: tuple[str, ...] = ()  # other features that need it too
    # DRY_RUN/READ: the call's parameters (livecheck.Probe -> kwargs); livecheck adds DryRun.
    # It raises livecheck.Unchecked when the check needs something that does not exist.
    params: Callable[[Any], dict[str, Any]] | None = field(default=None, compare=False)

    @property
    def iam_action(self) -> str:
        return f"{IAM_PREFIX[self.service]}:{self.operation}"

    @property
    def call(self) -> str:
        return f"{self.service}:{self.operation}"


def _tags(probe: Any, resource_type: str) -> list[dict[str, Any]]:
    return [{"ResourceType": resource_type, "Tags": probe.tags(resource_type)}]


def _gpubox_tagged(key: str = "gpubox:box") -> list[dict[str, Any]]:
    return [{"Name": "tag-key", "Values": [key]}]


BOX_RESOURCES = ("instance", "volume")
EC2 = "ec2"

PERMISSIONS: tuple[Permission, ...] = (
    # --- core: one box, end to end ------------------------------------------------
    Permission("sts", "GetCallerIdentity", "core", READ,
               "nothing: AWS lets every identity ask who it is",
               params=lambda p: {}),
    Permission(EC2, "DescribeRegions", "core", READ,
               "regions cannot be listed: `gpubox regions` and the search of every region",
               params=lambda p: {"RegionNames": [p.region]}),
    Permission(EC2, "DescribeInstances", "core", READ,
               "gpubox cannot find any box: nothing works",
               params=lambda p: {"Filters": _gpubox_tagged()}),
    Permission(EC2, "DescribeInstanceTypes", "core", READ,
               "no type is checked before a launch, and `gpubox types` lists nothing",
               params=lambda p: {"InstanceTypes": [p.instance_type]}),
    Permission(EC2, "DescribeInstanceTypeOfferings", "core", READ,
               "up cannot pick a zone or region that offers the type",
               params=lambda p: {"LocationType": "region", "Filters": [
                   {"Name": "instance-type", "Values": [p.instance_type]}]}),
    Permission(EC2, "DescribeImages", "core", READ,
               "no image can be resolved: up fails",
               params=lambda p: {"Owners": ["self"], "Filters": _gpubox_tagged()}),
    Permission("ssm", "GetParameter", "core", READ,
               "the default images (dlami, ubuntu) cannot be found: only --image ami-... works",
               grants=(Grant(("ssm-public-parameter",)),),
               params=lambda p: {"Name": p.image_parameter}),
    Permission(EC2, "DescribeVpcs", "core", READ,
               "no security group can be made: up fails",
               params=lambda p: {"Filters": [{"Name": "isDefault", "Values": ["true"]}]}),
    Permission(EC2, "DescribeSecurityGroups", "core", READ,
               "up cannot find or reuse a box's security group",
               params=lambda p: {"Filters": _gpubox_tagged()}),
    Permission(EC2, "CreateSecurityGroup", "core", DRY_RUN,
               "up cannot make a box's security group: no new box",
               grants=(Grant(("security-group",), REQUEST_TAG), Grant(("vpc",))),
               params=lambda p: {"GroupName": "gpubox-doctor-check",
                                 "Description": "gpubox doctor --live (dry run)",
                                 "VpcId": p.needs("vpc"),
                                 "TagSpecifications": _tags(p, "security-group")}),
    Permission(EC2, "AuthorizeSecurityGroupIngress", "core", DRY_RUN,
               "SSH cannot be admitted to a new box, and a box of several nodes cannot "
               "let its nodes talk",
               grants=(Grant(("security-group", "security-group-rule"), RESOURCE_TAG),),
               params=lambda p: {"GroupId": p.needs("group"), "IpPermissions": [
                   {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
                    "IpRanges": [{"CidrIp": "192.0.2.1/32"}]}]}),
    Permission(EC2, "RevokeSecurityGroupIngress", "core", DRY_RUN,
               "start cannot move the SSH rule to your address of the day",
               grants=(Grant(("security-group", "security-group-rule"), RESOURCE_TAG),),
               params=lambda p: {"GroupId": p.needs("group"), "IpPermissions": [
                   {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
                    "IpRanges": [{"CidrIp": "192.0.2.1/32"}]}]}),
    Permission(EC2, "DeleteSecurityGroup", "core", DRY_RUN,
               "down leaves the box's security group behind",
               grants=(Grant(("security-group",), RESOURCE_TAG),),
               params=lambda p: {"GroupId": p.needs("group")}),
    Permission(EC2, "DescribeKeyPairs", "core", READ,
               "up cannot find or reuse a box's key pair",
               params=lambda p: {"Filters": _gpubox_tagged()}),
    Permission(EC2, "CreateKeyPair", "core", DRY_RUN,
               "up cannot make a box's key pair: no new box",
               grants=(Grant(("key-pair",), REQUEST_TAG),),
               params=lambda p: {"KeyName": "gpubox-doctor-check", "KeyType": "ed25519",
                                 "TagSpecifications": _tags(p, "key-pair")}),
    Permission(EC2, "ImportKeyPair", "core", DRY_RUN,
               "a key file kept here cannot be used in a second region",
               grants=(Grant(("key-pair",), REQUEST_TAG),),
               params=lambda p: {"KeyName": "gpubox-doctor-check",
                                 "PublicKeyMaterial": CHECK_PUBLIC_KEY.encode(),
                                 "TagSpecifications": _tags(p, "key-pair")}),
    Permission(EC2, "DeleteKeyPair", "core", DRY_RUN,
               "down leaves the box's key pair behind",
               grants=(Grant(("key-pair",), RESOURCE_TAG),),
               params=lambda p: {"KeyName": p.needs("key")}),
    Permission(EC2, "RunInstances", "core", DRY_RUN,
               "no box can be launched",
               grants=(Grant(BOX_RESOURCES, REQUEST_TAG),
                       Grant(("image", "snapshot", "subnet", "network-interface", "security-group",
                              "key-pair", "placement-group", "spot-instances-request"))),
               params=lambda p: p.needs("launch")),
    Permission(EC2, "CreateTags", "core", DRY_RUN,
               "nothing can be tagged, so nothing can be made (gpubox finds what it made by "
               "its tags)",
               grants=(Grant(("*",), CREATE_ACTION), Grant(("*",), RESOURCE_TAG),
                       Grant(("snapshot",), REQUEST_TAG)),
               params=lambda p: {"Resources": [p.needs("instance")],
                                 "Tags": [{"Key": "Name", "Value": p.needs("instance name")}]}),
    Permission(EC2, "DescribeVolumes", "core", READ,
               "status shows no disk sizes and costs; data volumes cannot be found",
               params=lambda p: {"Filters": _gpubox_tagged("gpubox:kind")}),
    Permission(EC2, "StopInstances", "core", DRY_RUN,
               "`gpubox stop` fails (the box's own guard still stops it: that needs no AWS "
               "permission)",
               grants=(Grant(("instance",), RESOURCE_TAG),),
               params=lambda p: {"InstanceIds": [p.needs("instance")]}),
    Permission(EC2, "StartInstances", "core", DRY_RUN,
               "a stopped box cannot be started again",
               grants=(Grant(("instance",), RESOURCE_TAG),),
               params=lambda p: {"InstanceIds": [p.needs("instance")]}),
    Permission(EC2, "TerminateInstances", "core", DRY_RUN,
               "`gpubox down` cannot remove a box: it bills until someone else removes it",
               grants=(Grant(("instance",), RESOURCE_TAG),),
               params=lambda p: {"InstanceIds": [p.needs("instance")]}),
    Permission(EC2, "GetConsoleOutput", "core", READ,
               "host keys are not pinned from the console; selftest cannot see the guard",
               grants=(Grant(("instance",), RESOURCE_TAG),),
               params=lambda p: {"InstanceId": p.needs("instance")}),
    Permission("resourcegroupstaggingapi", "GetResources", "core", READ,
               "every region is looked at the long way (slower status, gc, images)",
               params=lambda p: {"TagFilters": [{"Key": "gpubox:box"}], "ResourcesPerPage": 1}),
    # --- spot ---------------------------------------------------------------------------
    Permission(EC2, "CancelSpotInstanceRequests", "spot", DRY_RUN,
               "down of a persistent spot box leaves its request, which launches it again",
               grants=(Grant(("spot-instances-request",)),),
               params=lambda p: {"SpotInstanceRequestIds": [p.needs("spot request")]}),
    # --- prices -------------------------------------------------------------------------
    Permission("pricing", "GetProducts", "prices", READ,
               "on-demand prices come from the shipped snapshot, not the Price List API",
               params=lambda p: {"ServiceCode": "AmazonEC2", "MaxResults": 1, "Filters": [
                   {"Type": "TERM_MATCH", "Field": "instanceType", "Value": p.instance_type}]}),
    Permission(EC2, "DescribeSpotPriceHistory", "prices", READ,
               "no spot prices: --spot cannot check --max-price, types shows none",
               params=lambda p: {"InstanceTypes": [p.instance_type], "MaxResults": 5,
                                 "ProductDescriptions": ["Linux/UNIX"]}),
    # --- quotas -------------------------------------------------------------------------
    Permission("service-quotas", "GetServiceQuota", "quotas", READ,
               "a launch is not checked against your vCPU quota first (AWS still refuses one "
               "over it, later)",
               params=lambda p: {"ServiceCode": "ec2", "QuotaCode": "L-DB2E81BA"}),
    Permission("service-quotas", "GetAWSDefaultServiceQuota", "quotas", READ,
               "`gpubox quota` cannot show AWS's default where your own value is unknown",
               params=lambda p: {"ServiceCode": "ec2", "QuotaCode": "L-DB2E81BA"}),
    Permission("service-quotas", "ListRequestedServiceQuotaChangeHistoryByQuota", "quotas",
               READ, "`gpubox quota` cannot show the increases you asked for",
               params=lambda p: {"ServiceCode": "ec2", "QuotaCode": "L-DB2E81BA"}),
    Permission("service-quotas", "RequestServiceQuotaIncrease", "quotas", NONE,
               "`gpubox quota request` cannot file an increase (the console still can)"),
    # --- nodes --------------------------------------------------------------------------
    Permission(EC2, "CreatePlacementGroup", "nodes", DRY_RUN,
               "no --nodes",
               grants=(Grant(("placement-group",), REQUEST_TAG),),
               params=lambda p: {"GroupName": "gpubox-doctor-check", "Strategy": "cluster",
                                 "TagSpecifications": _tags(p, "placement-group")}),
    Permission(EC2, "DescribePlacementGroups", "nodes", READ,
               "no --nodes",
               params=lambda p: {}),  # gpubox's are picked by tag from the answer
    Permission(EC2, "DeletePlacementGroup", "nodes", DRY_RUN,
               "down of a box of several nodes leaves its placement group behind (it is free)",
               grants=(Grant(("placement-group",), RESOURCE_TAG),),
               params=lambda p: {"GroupName": p.needs("placement group")}),
    # --- volumes ------------------------------------------------------------------------
    Permission(EC2, "CreateVolume", "volumes", DRY_RUN,
               "no --volume: a data volume cannot be made",
               grants=(Grant(("volume",), REQUEST_TAG), Grant(("snapshot",), RESOURCE_TAG)),
               params=lambda p: {"AvailabilityZone": p.needs("zone"), "Size": 1,
                                 "VolumeType": "gp3", "Encrypted": True,
                                 "TagSpecifications": _tags(p, "volume")}),
    Permission(EC2, "AttachVolume", "volumes", DRY_RUN,
               "no --volume: a data volume cannot be attached",
               grants=(Grant(BOX_RESOURCES, RESOURCE_TAG),),
               params=lambda p: {"VolumeId": p.needs("data volume"),
                                 "InstanceId": p.needs("instance"), "Device": "/dev/sdf"}),
    Permission(EC2, "DetachVolume", "volumes", DRY_RUN,
               "a data volume cannot move to another zone with its box",
               grants=(Grant(BOX_RESOURCES, RESOURCE_TAG),),
               params=lambda p: {"VolumeId": p.needs("data volume")}),
    Permission(EC2, "DeleteVolume", "volumes", DRY_RUN,
               "`gpubox volume rm` and `down --delete-volume` cannot delete a data volume",
               grants=(Grant(("volume",), RESOURCE_TAG),),
               also=("gc",),
               params=lambda p: {"VolumeId": p.needs("data volume")}),
    Permission(EC2, "CreateSnapshot", "volumes", DRY_RUN,
               "a data volume cannot move to another zone",
               grants=(Grant(("volume",), RESOURCE_TAG), Grant(("snapshot",), REQUEST_TAG)),
               params=lambda p: {"VolumeId": p.needs("data volume"),
                                 "TagSpecifications": _tags(p, "snapshot")}),
    Permission(EC2, "ModifyVolume", "volumes", DRY_RUN,
               "a data volume cannot grow; `gpubox resize --disk` cannot grow a disk",
               grants=(Grant(("volume",), RESOURCE_TAG),),
               also=("resize",),
               params=lambda p: {"VolumeId": p.needs("data volume"), "Size": p.needs("bigger")}),
    # --- images -------------------------------------------------------------------------
    Permission(EC2, "CreateImage", "images", DRY_RUN,
               "`gpubox image save` cannot save a box",
               grants=(Grant(("instance",), RESOURCE_TAG), Grant(("image",), REQUEST_TAG),
                       Grant(("snapshot",))),
               params=lambda p: {"InstanceId": p.needs("instance"), "Name": "gpubox-doctor-check",
                                 "TagSpecifications": _tags(p, "image")}),
    Permission(EC2, "DeregisterImage", "images", DRY_RUN,
               "`gpubox image rm` and gc cannot remove a saved image",
               grants=(Grant(("image",), RESOURCE_TAG),),
               also=("gc",),
               params=lambda p: {"ImageId": p.needs("image")}),
    Permission(EC2, "DescribeSnapshots", "images", READ,
               "a saved image's snapshots (billed) cannot be found or removed",
               also=("volumes", "gc"),
               params=lambda p: {"OwnerIds": ["self"], "Filters": _gpubox_tagged("gpubox:kind")}),
    Permission(EC2, "DeleteSnapshot", "images", DRY_RUN,
               "a removed saved image leaves its snapshots, billed, behind",
               grants=(Grant(("snapshot",), RESOURCE_TAG),),
               also=("volumes", "gc"),
               params=lambda p: {"SnapshotId": p.needs("snapshot")}),
    # --- resize -------------------------------------------------------------------------
    Permission(EC2, "ModifyInstanceAttribute", "resize", DRY_RUN,
               "`gpubox resize --type` cannot change a box's type",
               grants=(Grant(("instance",), RESOURCE_TAG),),
               params=lambda p: {"InstanceId": p.needs("instance"),
                                 "InstanceType": {"Value": p.instance_type}}),
    # --- gc -----------------------------------------------------------------------------
    Permission(EC2, "DescribeAddresses", "gc", READ,
               "gc cannot find elastic addresses gpubox left (billed)",
               params=lambda p: {"Filters": _gpubox_tagged()}),
    Permission(EC2, "ReleaseAddress", "gc", DRY_RUN,
               "gc cannot release an elastic address gpubox left",
               grants=(Grant(("elastic-ip",), RESOURCE_TAG),),
               params=lambda p: {"AllocationId": p.needs("address")}),
)

# A throwaway public key (its private half was never kept): ImportKeyPair's dry run.
CHECK_PUBLIC_KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEvGCFHM4HoRSMH2nPvnjXHJRclLJgyJn6aGMEnW213l "
    "gpubox-doctor-check"
)


def by_call() -> dict[str, Permission]:
    """{"ec2:RunInstances": its Permission, ...}: botocore's service name and operation."""
    return {p.call: p for p in PERMISSIONS}


def for_features(features: Iterable[str] | None = None) -> list[Permission]:
    """The table's entries for these features; core always (the others build on it)."""
    wanted = set(features or FEATURES)
    unknown = wanted - set(FEATURES)
    if unknown:
        from gpubox.errors import InvalidInput

        raise InvalidInput(
            f"unknown feature: {', '.join(sorted(unknown))}",
            hint=f"features: {', '.join(FEATURES)}",
        )
    wanted.add("core")
    return [p for p in PERMISSIONS if p.feature in wanted or wanted & set(p.also)]


def arn(service: str, resource_type: str) -> str:
    if resource_type == "*":
        return "*"
    if resource_type == "ssm-public-parameter":
        return "arn:aws:ssm:*::parameter/aws/service/*"
    if resource_type in ("image", "snapshot"):  # no account in these ARNs
        return f"arn:aws:{service}:*::{resource_type}/*"
    return f"arn:aws:{service}:*:*:{resource_type}/*"


def _condition(kind: str, create_actions: list[str]) -> dict[str, Any] | None:
    if kind == REQUEST_TAG:
        return {"StringLike": {f"aws:RequestTag/{TAG_KEY}": "?*"}}
    if kind == RESOURCE_TAG:
        return {"StringLike": {f"aws:ResourceTag/{TAG_KEY}": "?*"}}
    if kind == CREATE_ACTION:
        return {"StringEquals": {"ec2:CreateAction": create_actions}}
    return None


def _sid(*words: str) -> str:
    return "".join(w.replace("-", " ").title().replace(" ", "") for w in words if w)


def policy(features: Iterable[str] | None = None) -> dict[str, Any]:
    """The IAM policy document gpubox needs for these features (all by default)."""
    chosen = for_features(features)
    # The creates that tag what they make: CreateTags is allowed as part of those only.
    create_actions = sorted({
        p.operation for p in chosen for g in p.grants
        if g.condition == REQUEST_TAG and "TagSpecifications" in _param_names(p)
    })  # fmt: skip
    groups: dict[tuple[str, tuple[str, ...], str], list[str]] = {}
    for perm in chosen:
        for grant in perm.grants:
            key = (perm.service, grant.resources, grant.condition)
            groups.setdefault(key, [])
            if perm.iam_action not in groups[key]:
                groups[key].append(perm.iam_action)
    statements = []
    for (service, resources, condition), actions in groups.items():
        arns = [arn(service, r) for r in resources]
        statement: dict[str, Any] = {
            "Sid": _sid(IAM_PREFIX[service], *(r for r in resources[:1] if r != "*"), condition),
            "Effect": "Allow",
            "Action": sorted(actions),
            "Resource": "*" if arns == ["*"] else arns,
        }
        cond = _condition(condition, create_actions)
        if cond:
            statement["Condition"] = cond
        statements.append(statement)
    seen: dict[str, int] = {}
    for statement in statements:  # Sids must be unique
        n = seen[statement["Sid"]] = seen.get(statement["Sid"], 0) + 1
        if n > 1:
            statement["Sid"] += str(n)
    return {"Version": "2012-10-17", "Statement": statements}


def _param_names(perm: Permission) -> set[str]:
    """The parameter names an entry's check sends (a stand-in probe answers every need)."""
    if perm.params is None:
        return set()

    class Anything:
        region = "us-east-1"
        instance_type = "t3.micro"
        image_parameter = "/x"

        def needs(self, kind: str) -> Any:
            return {"TagSpecifications": []} if kind == "launch" else "x"

        def tags(self, resource_type: str) -> list[dict[str, str]]:
            return []

    return set(perm.params(Anything()))


# IAM's limit on a managed policy, counted without whitespace.
MANAGED_POLICY_LIMIT = 6144


def policy_json(features: Iterable[str] | None = None) -> str:
    return json.dumps(policy(features), indent=2)


def policy_actions(document: dict[str, Any]) -> set[str]:
    """Every IAM action a policy document allows (its statements' Action lists)."""
    found: set[str] = set()
    for statement in document.get("Statement", []):
        actions = statement.get("Action", [])
        found.update([actions] if isinstance(actions, str) else actions)
    return found

