"""A box's way in over the network: its security group admits SSH from one address only.

Also the names and tags every gpubox resource on AWS carries. The key pair is in
keypairs.py.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gpubox.errors import GpuboxError, InvalidInput, NotFound
from gpubox.providers.aws.session import aws_errors, client, error_code

if TYPE_CHECKING:
    from gpubox.config import Settings

PUBLIC_IP_TIMEOUT_SECONDS = 3.0
LIVE_STATES = ["pending", "running", "shutting-down", "stopping", "stopped"]


def resource_name(box_name: str) -> str:
    """The AWS name of a box's key pair and security group."""
    return f"gpubox-{box_name}"


# The tags every resource gpubox makes carries (docs/conventions.md): the one place.
BOX_TAG = "gpubox:box"
OWNER_TAG = "gpubox:owner"
KIND_TAG = "gpubox:kind"
# A data volume's own name: it outlives every box it is attached to (volumes.py).
VOLUME_TAG = "gpubox:volume"
# A box of several instances (cluster.py): node 0's name, and each instance's rank.
CLUSTER_TAG = "gpubox:cluster"
NODE_TAG = "gpubox:node"
# On key pairs: which gpubox (machine and data folder) made it and keeps its private key.
CLIENT_TAG = "gpubox:client"


def tags_for(box_name: str, owner: str, kind: str) -> list[dict[str, str]]:
    return [
        {"Key": BOX_TAG, "Value": box_name},
        {"Key": OWNER_TAG, "Value": owner},
        {"Key": KIND_TAG, "Value": kind},
        {"Key": "Name", "Value": resource_name(box_name)},
    ]


def node_tags(cluster: str | None, rank: int) -> list[dict[str, str]]:
    """The tags that make an instance one node of a box of several (none for one machine)."""
    if not cluster:
        return []
    return [{"Key": CLUSTER_TAG, "Value": cluster}, {"Key": NODE_TAG, "Value": str(rank)}]


def tag_value(item: Mapping[str, Any], key: str) -> str | None:
    """The value of one tag in an EC2 description (instance, volume, image ...), or None."""
    return next((t["Value"] for t in item.get("Tags", []) if t["Key"] == key), None)


# SSH source address ------------------------------------------------------------


def check_cidr(text: str) -> str:
    """A CIDR for an ingress rule; a bare address becomes its /32 (or /128)."""
    raw = text.strip()
    try:
        network = ipaddress.ip_network(raw, strict=True)
    except ValueError:
        try:
            network = ipaddress.ip_network(raw, strict=False)
        except ValueError:
            raise InvalidInput(
                f"--ssh-from '{text}' is not an address or CIDR",
                hint="e.g. --ssh-from 203.0.113.7/32 (your address) or 203.0.113.0/24",
            ) from None
        raise InvalidInput(
            f"--ssh-from '{text}' has host bits set",
            hint=f"did you mean {network.with_prefixlen}?",
        ) from None
    if network.prefixlen == 0:
        raise InvalidInput(
            f"--ssh-from {network} would open SSH to the whole internet",
            hint="admit only your own address or network, e.g. --ssh-from 203.0.113.7/32",
        )
    return network.with_prefixlen


def detect_public_cidr(settings: Settings) -> str | None:
    """This machine's public address as a /32 (or /128), asked of settings.public_ip_url."""
    import urllib.request

    try:
        with urllib.request.urlopen(
            settings.public_ip_url, timeout=PUBLIC_IP_TIMEOUT_SECONDS
        ) as response:
            text = response.read(100).decode("ascii", "replace").strip()
        address = ipaddress.ip_address(text)
    except (OSError, ValueError):
        return None
    if address.is_unspecified:
        return None
    return f"{address}/{address.max_prefixlen}"


def ssh_source(settings: Settings, ssh_from: str | None) -> tuple[str, bool]:
    """The CIDR to admit to tcp/22 and whether it was detected: the flag, the setting,
    else the detected public /32."""
    given = ssh_from or settings.ssh_from
    if given:
        return check_cidr(given), False
    detected = detect_public_cidr(settings)
    if detected:
        return detected, True
    raise InvalidInput(
        f"cannot tell which address to admit to SSH: {settings.public_ip_url} did not answer",
        hint="pass --ssh-from YOUR.PUBLIC.IP/32 (or a network you trust, e.g. x.y.z.0/24)",
    )


# Security group -----------------------------------------------------------------


def default_vpc(settings: Settings, region: str) -> str:
    with aws_errors(f"finding the default VPC in {region}"):
        vpcs = client(settings, "ec2", region).describe_vpcs(
            Filters=[{"Name": "isDefault", "Values": ["true"]}]
        )["Vpcs"]
    if not vpcs:
        raise NotFound(
            f"{region} has no default VPC",
            hint=f"create one with `aws ec2 create-default-vpc --region {region}`",
        )
    return vpcs[0]["VpcId"]


@dataclass(frozen=True)
class GroupResult:
    id: str
    created: bool


def ensure_security_group(
    settings: Settings, region: str, box_name: str, owner: str, cidr: str, detected: bool = False
) -> GroupResult:
    """The security group gpubox-NAME in the default VPC, admitting tcp/22 from `cidr` only.
    detected=True marks the rule as the caller's detected address, which `start` may move."""
    ec2 = client(settings, "ec2", region)
    group_name = resource_name(box_name)
    vpc = default_vpc(settings, region)
    with aws_errors(f"looking up security group {group_name}"):
        found = ec2.describe_security_groups(
            Filters=[
                {"Name": "group-name", "Values": [group_name]},
                {"Name": "vpc-id", "Values": [vpc]},
            ]
        )["SecurityGroups"]
    created = not found
    if found:
        group_id = found[0]["GroupId"]
    else:
        with aws_errors(f"creating security group {group_name}"):
            group_id = ec2.create_security_group(
                GroupName=group_name,
                Description=f"gpubox box {box_name}: SSH from one address",
                VpcId=vpc,
                TagSpecifications=[
                    {
                        "ResourceType": "security-group",
                        "Tags": tags_for(box_name, owner, "security-group"),
                    }
                ],
            )["GroupId"]
    from gpubox import inflight

    inflight.made("security group", group_id, region, note="" if created else "found")
    try:
        _admit_ssh(ec2, group_id, cidr, DETECTED_RULE if detected else GIVEN_RULE)
    except GpuboxError:
        if created:
            ec2.delete_security_group(GroupId=group_id)
            inflight.gone("security group", group_id)
        raise
    return GroupResult(group_id, created)


# Rule descriptions: which rules follow the caller's address, and which the user chose.
DETECTED_RULE = "gpubox ssh (detected address)"
GIVEN_RULE = "gpubox ssh (--ssh-from)"


def _ssh_permission(cidr: str, description: str | None = None) -> dict[str, Any]:
    entry: dict[str, str] = {"CidrIpv6" if ":" in cidr else "CidrIp": cidr}
    if description:
        entry["Description"] = description
    ranges = {"Ipv6Ranges": [entry]} if ":" in cidr else {"IpRanges": [entry]}
    return {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, **ranges}


def _admit_ssh(ec2: Any, group_id: str, cidr: str, description: str) -> None:
    import botocore.exceptions

    try:
        ec2.authorize_security_group_ingress(
            GroupId=group_id, IpPermissions=[_ssh_permission(cidr, description)]
        )
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) == "InvalidPermission.Duplicate":
            return
        with aws_errors("admitting SSH"):
            raise


def follow_detected_address(settings: Settings, region: str, group_id: str, cidr: str) -> bool:
    """Move a group's detected-address SSH rule to `cidr` (the caller's address today).
    Rules the user gave with --ssh-from are never touched, nor a group that has only those.
    True when the rules changed."""
    ec2 = client(settings, "ec2", region)
    with aws_errors(f"reading security group {group_id}"):
        group = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]
    detected = [
        r.get("CidrIp") or r.get("CidrIpv6")
        for p in group.get("IpPermissions", [])
        if p.get("FromPort") == 22
        for r in [*p.get("IpRanges", []), *p.get("Ipv6Ranges", [])]
        if r.get("Description") == DETECTED_RULE
    ]
    if not detected or detected == [cidr]:
        return False
    _admit_ssh(ec2, group_id, cidr, DETECTED_RULE)
    stale = [c for c in detected if c and c != cidr]
    if stale:
        with aws_errors(f"revoking old SSH addresses from {group_id}"):
            ec2.revoke_security_group_ingress(
                GroupId=group_id, IpPermissions=[_ssh_permission(c) for c in stale]
            )
    return True


NODES_RULE = "gpubox nodes of one box reach each other"


def admit_group_itself(settings: Settings, region: str, group_id: str) -> None:
    """All traffic between members of the group (the nodes of one box), and from nowhere
    else: the rule names the group itself, never an address range."""
    import botocore.exceptions

    ec2 = client(settings, "ec2", region)
    rule = {"IpProtocol": "-1",
            "UserIdGroupPairs": [{"GroupId": group_id, "Description": NODES_RULE}]}
    try:
        ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=[rule])
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) == "InvalidPermission.Duplicate":
            return
        with aws_errors("letting the nodes reach each other"):
            raise


# Cleanup ------------------------------------------------------------------------


def instances_using(ec2: Any, name: str, value: str) -> list[str]:
    found = ec2.describe_instances(
        Filters=[
            {"Name": name, "Values": [value]},
            {"Name": "instance-state-name", "Values": LIVE_STATES},
        ]
    )
    return [i["InstanceId"] for r in found["Reservations"] for i in r["Instances"]]


def delete_security_group_if_unused(settings: Settings, region: str, group_id: str) -> bool:
    """Delete the group when no live instance uses it; True when it is gone."""
    import time

    import botocore.exceptions

    ec2 = client(settings, "ec2", region)
    with aws_errors(f"checking who uses security group {group_id}"):
        if instances_using(ec2, "instance.group-id", group_id):
            return False
    # A just-terminated instance's network interface lets go of the group a little later.
    from gpubox import inflight

    for attempt in range(6):
        try:
            ec2.delete_security_group(GroupId=group_id)
            inflight.gone("security group", group_id)
            return True
        except botocore.exceptions.ClientError as exc:
            code = error_code(exc)
            if code == "InvalidGroup.NotFound":
                inflight.gone("security group", group_id)
                return True
            if code != "DependencyViolation" or attempt == 5:
                with aws_errors(f"deleting security group {group_id}"):
                    raise
            time.sleep(2 * (attempt + 1))
    return False


def remove_leftovers(settings: Settings, region: str, box_name: str) -> list[str]:
    """What an interrupted `down` (or launch) left of a box in one region: its tagged
    security groups and key pairs that no live instance uses. Removed; said one by one."""
    from gpubox import inflight

    ec2 = client(settings, "ec2", region)
    mine = [{"Name": f"tag:{BOX_TAG}", "Values": [box_name]}]
    removed: list[str] = []
    with aws_errors(f"looking for what is left of '{box_name}' in {region}"):
        groups = ec2.describe_security_groups(Filters=mine)["SecurityGroups"]
        keys = ec2.describe_key_pairs(Filters=mine)["KeyPairs"]
        for key in keys:
            if not instances_using(ec2, "key-name", key["KeyName"]):
                ec2.delete_key_pair(KeyName=key["KeyName"])
                inflight.gone("key pair", key["KeyName"])
                removed.append(f"key pair {key['KeyName']} ({region})")
    for group in groups:
        if delete_security_group_if_unused(settings, region, group["GroupId"]):
            removed.append(f"security group {group['GroupId']} ({region})")
    return removed


def ended_instances(settings: Settings, region: str, box_name: str) -> list[str]:
    """The box's instances that are terminated (or on their way): proof a box is gone.
    AWS shows a terminated instance for about an hour."""
    ec2 = client(settings, "ec2", region)
    with aws_errors(f"looking for ended instances of '{box_name}' in {region}"):
        found = ec2.describe_instances(Filters=[
            {"Name": f"tag:{BOX_TAG}", "Values": [box_name]},
            {"Name": "instance-state-name", "Values": ["shutting-down", "terminated"]},
        ])["Reservations"]  # fmt: skip
    return [i["InstanceId"] for r in found for i in r["Instances"]]
