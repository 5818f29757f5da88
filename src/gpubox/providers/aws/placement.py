"""What a box of several instances needs on AWS: one cluster placement group (the nodes
close together on the network) and EFA interfaces where the type has them.

The placement group is gpubox-NAME (NAME: node 0's box), tagged like every resource
gpubox makes; the security group's rule that lets the nodes reach each other is in
network.py (admit_group_itself).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from gpubox.providers.aws.network import CLUSTER_TAG, instances_using, resource_name, tags_for
from gpubox.providers.aws.session import aws_errors, client, error_code

if TYPE_CHECKING:
    from gpubox.config import Settings


def group_name(cluster: str) -> str:
    return resource_name(cluster)


def ensure_placement_group(settings: Settings, region: str, cluster: str, owner: str) -> tuple[str, bool]:
    """The cluster placement group of the box `cluster`: (its name, whether made now)."""
    ec2 = client(settings, "ec2", region)
    name = group_name(cluster)
    with aws_errors(f"looking up placement group {name}"):
        # Filters, not GroupNames: AWS answers an unknown name in GroupNames with an error.
        found = ec2.describe_placement_groups(
            Filters=[{"Name": "group-name", "Values": [name]}])["PlacementGroups"]
    if found:
        return name, False
    with aws_errors(f"creating placement group {name}"):
        ec2.create_placement_group(
            GroupName=name,
            Strategy="cluster",
            TagSpecifications=[{"ResourceType": "placement-group",
                                "Tags": tags_for(cluster, owner, "placement-group")}],
        )
    return name, True


def delete_placement_group_if_unused(settings: Settings, region: str, cluster: str) -> bool:
    """Delete the box's placement group once none of its nodes is alive; True when gone."""
    import botocore.exceptions

    ec2 = client(settings, "ec2", region)
    with aws_errors(f"checking the nodes of '{cluster}'"):
        if instances_using(ec2, "tag:" + CLUSTER_TAG, cluster):
            return False
    # Terminated instances let go of the group a little after they say "terminated".
    for attempt in range(6):
        try:
            ec2.delete_placement_group(GroupName=group_name(cluster))
            return True
        except botocore.exceptions.ClientError as exc:
            code = error_code(exc)
            if code == "InvalidPlacementGroup.Unknown":
                return True
            if code != "InvalidPlacementGroup.InUse" or attempt == 5:
                with aws_errors(f"deleting placement group {group_name(cluster)}"):
                    raise
            time.sleep(2 * (attempt + 1))
    return False


def efa_supported(settings: Settings, region: str, instance_type: str) -> bool:
    """Whether the type has Elastic Fabric Adapter interfaces (p4d, p5 ...)."""
    with aws_errors(f"reading {instance_type}'s network"):
        found = client(settings, "ec2", region).describe_instance_types(
            InstanceTypes=[instance_type])["InstanceTypes"]
    return bool(found and found[0].get("NetworkInfo", {}).get("EfaSupported"))
