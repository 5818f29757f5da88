"""EC2 instances: one launch attempt, finding boxes by tag, waiting, and the Box they become.

The word "instance" stays in this package; what leaves it is a `Box`.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gpubox import guard, inflight
from gpubox.errors import CapacityError, GpuboxError, InvalidInput
from gpubox.providers.aws.network import (
    BOX_TAG,
    CLUSTER_TAG,
    LIVE_STATES,
    NODE_TAG,
    node_tags,
    tag_value,
    tags_for,
)
from gpubox.providers.aws.prices import snapshot_per_hour
from gpubox.providers.aws.session import (
    CAPACITY_CODES,
    THROTTLE_CODES,
    aws_errors,
    client,
    error_code,
    map_error,
)
from gpubox.providers.aws.spot import interruption_from_instance, market_options
from gpubox.providers.base import Box, BoxSpec, BoxState, Progress

if TYPE_CHECKING:
    from gpubox.config import Settings
    from gpubox.providers.aws.images import Image

# Retried by hand on RunInstances (idempotent thanks to ClientToken); capacity is never.
TRANSIENT_LAUNCH_CODES = THROTTLE_CODES | {"InternalError", "ServiceUnavailable", "Unavailable"}
LAUNCH_TRIES = 4
# Waiter pacing: EC2 GPU instances take 15-60 s to run, 30-120 s to stop.
WAIT_DELAY_SECONDS = 5
WAIT_MAX_ATTEMPTS = 120



@dataclass(frozen=True)
class LaunchContext:
    """What every launch attempt of one box shares: where, from which image, with what key."""

    settings: Settings
    region: str
    image: Image
    key_name: str
    group_id: str
    owner: str
    # What names this box in the cloud, the same for every process launching it: the
    # account, and the box's generation (its security group, new after each `down`).
    account: str = ""
    generation: str = ""
    on_progress: Progress | None = None
    wait_delay: float = WAIT_DELAY_SECONDS
    placement_group: str | None = None  # a box of several instances: its cluster group
    efa: bool = False  # ... and the type has EFA: the primary interface is one

    def say(self, message: str) -> None:
        if self.on_progress:
            self.on_progress(message)


def client_token(
    account: str, region: str, name: str, generation: str, instance_type: str, place: str | None
) -> str:
    """Same box, same token: a retried RunInstances, or a second `up` of the name racing
    this one (another terminal, another laptop), gets the same instance, never a second.

    Nothing per-process goes in: the account, region and name say which box; the
    generation (its security group's id) tells a box from the one a `down` removed,
    whose token EC2 still remembers; the type and zone of the try tell one failover try
    from the next, and two racing launches of the box try them in the same order.
    """
    digest = hashlib.sha256(
        f"{account}|{region}|{name}|{generation}|{instance_type}|{place}".encode()
    )
    return f"gpubox-{name}-{digest.hexdigest()[:16]}"[:64]


def run_params(ctx: LaunchContext, spec: BoxSpec, instance_type: str, place: str | None) -> dict:
    image = ctx.image
    if image.root_size_gb and spec.disk_gb < image.root_size_gb:
        raise InvalidInput(
            f"--disk {spec.disk_gb} is smaller than the image's {image.root_size_gb} GB disk",
            hint=f"pass --disk {image.root_size_gb} or more",
        )
    params: dict[str, Any] = {
        "ImageId": image.id,
        "InstanceType": instance_type,
        "MinCount": 1,
        "MaxCount": 1,
        "KeyName": ctx.key_name,
        "SecurityGroupIds": [ctx.group_id],
        "BlockDeviceMappings": [
            {
                "DeviceName": image.root_device_name,
                "Ebs": {
                    "VolumeSize": spec.disk_gb,
                    "VolumeType": "gp3",
                    "Encrypted": True,
                    # moto (and some SDK paths) default this to False: always say it.
                    "DeleteOnTermination": True,
                },
            }
        ],
        "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled"},
        # The idle agent stops the box with an OS shutdown; that must never terminate it.
        "InstanceInitiatedShutdownBehavior": "stop",
        "TagSpecifications": [
            {"ResourceType": "instance",
             "Tags": tags_for(spec.name, ctx.owner, "instance")
             + node_tags(spec.cluster, spec.node_rank)},
            {"ResourceType": "volume", "Tags": tags_for(spec.name, ctx.owner, "volume")},
        ],
        "ClientToken": client_token(
            ctx.account, ctx.region, spec.name, ctx.generation, instance_type, place
        ),
        # The box's guard: cloud-init installs the idle agent at first boot (gpubox/guard.py).
        "UserData": guard.user_data(ctx.settings, spec),
    }
    if place and place.startswith("subnet-"):
        params["SubnetId"] = place
    elif place:
        params["Placement"] = {"AvailabilityZone": place}
    if spec.spot:
        params["InstanceMarketOptions"] = market_options(spec.max_price)
    if ctx.placement_group:
        params["Placement"] = {**params.get("Placement", {}), "GroupName": ctx.placement_group}
    if ctx.efa:
        # An EFA is asked for as the primary network interface; the group and subnet
        # move onto it (RunInstances refuses them beside NetworkInterfaces).
        interface = {"DeviceIndex": 0, "InterfaceType": "efa", "Groups": [ctx.group_id],
                     "DeleteOnTermination": True, "AssociatePublicIpAddress": True}
        if "SubnetId" in params:
            interface["SubnetId"] = params.pop("SubnetId")
        del params["SecurityGroupIds"]
        params["NetworkInterfaces"] = [interface]
    return params


def launch_attempt(
    ctx: LaunchContext, spec: BoxSpec, instance_type: str, subnet_or_az: str | None
) -> dict[str, Any]:
    """One RunInstances in one place, waited to running. Returns the instance description,
    or raises CapacityError / QuotaExceeded (or another GpuboxError) with no instance left."""
    import botocore.exceptions

    params = run_params(ctx, spec, instance_type, subnet_or_az)
    where = subnet_or_az or ctx.region
    ec2 = client(ctx.settings, "ec2", ctx.region, purpose="launch")
    ctx.say(f"launching {instance_type} in {where}{' (spot)' if spec.spot else ''}")
    inflight.step(f"launching {instance_type} in {where} (an instance may exist already)")
    for attempt in range(1, LAUNCH_TRIES + 1):
        try:
            instance = ec2.run_instances(**params)["Instances"][0]
            break
        except botocore.exceptions.ClientError as exc:
            code = error_code(exc)
            if code in TRANSIENT_LAUNCH_CODES and attempt < LAUNCH_TRIES:
                time.sleep(min(2**attempt, 10))
                continue
            if code == "Unsupported":  # the type is not sold in that zone: try another one
                raise CapacityError(
                    f"{instance_type} is not available in {where} (AWS Unsupported)",
                    hint="try another availability zone or region",
                ) from exc
            raise map_error(exc, f"launching {instance_type} in {where}") or exc from exc
        except Exception as exc:
            mapped = map_error(exc, f"launching {instance_type} in {where}")
            if mapped is None:
                raise
            raise mapped from exc
    inflight.made("instance", instance["InstanceId"], ctx.region,
                  snapshot_per_hour(instance_type, ctx.region), f"box '{spec.name}'")  # fmt: skip
    ctx.say(f"instance {instance['InstanceId']} is {instance['State']['Name']}; waiting for running")
    return wait_for(ctx.settings, ctx.region, instance["InstanceId"], "running", ctx.wait_delay)


def describe(settings: Settings, region: str, instance_id: str) -> dict[str, Any]:
    with aws_errors(f"looking up {instance_id}"):
        found = client(settings, "ec2", region).describe_instances(InstanceIds=[instance_id])
    return found["Reservations"][0]["Instances"][0]


WAITERS = {"running": "instance_running", "stopped": "instance_stopped",
           "terminated": "instance_terminated"}


def wait_for(
    settings: Settings, region: str, instance_id: str, target: str, delay: float = WAIT_DELAY_SECONDS
) -> dict[str, Any]:
    """Wait with boto3's waiter (which answers at once when the first look already says so)."""
    import botocore.exceptions

    current = describe(settings, region, instance_id)
    if current["State"]["Name"] == target:
        return current
    waiter = client(settings, "ec2", region).get_waiter(WAITERS[target])
    try:
        waiter.wait(
            InstanceIds=[instance_id],
            WaiterConfig={"Delay": max(delay, 0.01), "MaxAttempts": WAIT_MAX_ATTEMPTS},
        )
    except botocore.exceptions.WaiterError:
        current = describe(settings, region, instance_id)
        state = current["State"]["Name"]
        reason = current.get("StateReason", {})
        if target == "running" and state in ("shutting-down", "terminated"):
            message = f"{instance_id} ended before it ran: {reason.get('Message', state)}"
            if any(code in reason.get("Code", "") for code in CAPACITY_CODES) or (
                "capacity" in reason.get("Message", "").lower()
            ):
                raise CapacityError(message, hint="try another zone, region or type") from None
            raise GpuboxError(message) from None
        raise GpuboxError(
            f"{instance_id} did not become {target} (it is {state})",
            hint="`gpubox status` shows it; run the command again to keep waiting",
        ) from None
    return describe(settings, region, instance_id)


def find_instances(settings: Settings, region: str, name: str | None = None) -> list[dict]:
    """Non-terminated instances tagged by gpubox (one box's, or all) in one region."""
    filters = [
        {"Name": "tag:" + BOX_TAG, "Values": [name]} if name else
        {"Name": "tag-key", "Values": [BOX_TAG]},
        {"Name": "instance-state-name", "Values": LIVE_STATES},
    ]
    with aws_errors(f"listing boxes in {region}"):
        pages = client(settings, "ec2", region, purpose="read").get_paginator("describe_instances")
        return [
            i for page in pages.paginate(Filters=filters)
            for r in page["Reservations"] for i in r["Instances"]
        ]


def root_volume_sizes(settings: Settings, region: str, instances: list[dict]) -> dict[str, int]:
    """{instance id: root volume GB}, from one describe_volumes call."""
    roots = {}
    for inst in instances:
        for mapping in inst.get("BlockDeviceMappings", []):
            if mapping.get("DeviceName") == inst.get("RootDeviceName") and "Ebs" in mapping:
                roots[mapping["Ebs"]["VolumeId"]] = inst["InstanceId"]
    if not roots:
        return {}
    with aws_errors(f"reading disk sizes in {region}"):
        volumes = client(settings, "ec2", region, purpose="read").describe_volumes(VolumeIds=list(roots))
    return {roots[v["VolumeId"]]: int(v["Size"]) for v in volumes["Volumes"]}



def _epoch(value: Any) -> float | None:
    return value.timestamp() if hasattr(value, "timestamp") else None


def transition_time(reason: str) -> float | None:
    """Epoch seconds in EC2's 'User initiated (2026-11-27 03:04:05 GMT)', else None."""
    import calendar
    import re

    found = re.search(r"\((\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (?:GMT|UTC)\)", reason)
    if not found:
        return None
    return float(calendar.timegm(time.strptime(found.group(1), "%Y-%m-%d %H:%M:%S")))


def security_groups(inst: dict[str, Any]) -> list[dict[str, Any]]:
    """The instance's groups; for one launched with NetworkInterfaces (EFA), its interfaces'."""
    return inst.get("SecurityGroups") or [
        g for ni in inst.get("NetworkInterfaces", []) for g in ni.get("Groups", [])]


def box_from(
    settings: Settings,
    region: str,
    inst: dict[str, Any],
    disk_gb: int | None = None,
    price_per_hour: float | None = None,
) -> Box:
    state_name = inst["State"]["Name"]
    try:
        state = BoxState(state_name)
    except ValueError:  # "shutting-down"
        state = BoxState.TERMINATED if state_name == "shutting-down" else BoxState.UNKNOWN
    root_attach = None
    for mapping in inst.get("BlockDeviceMappings", []):
        if mapping.get("DeviceName") == inst.get("RootDeviceName"):
            root_attach = _epoch(mapping.get("Ebs", {}).get("AttachTime"))
    groups = security_groups(inst)
    extra = {
        "az": inst.get("Placement", {}).get("AvailabilityZone", ""),
        "key_name": inst.get("KeyName", ""),
        "sg_id": groups[0]["GroupId"] if groups else "",
        "private_ip": inst.get("PrivateIpAddress", ""),  # where other nodes reach it
        "cluster": tag_value(inst, CLUSTER_TAG) or "",
        "node": tag_value(inst, NODE_TAG) or "",
        "aws_state": state_name,
        "spot_request": inst.get("SpotInstanceRequestId", ""),
        # The start of its current or last run, kept while stopped too (cost rebuilds
        # a run from it when the local history is lost).
        "launch_time": f"{_epoch(inst.get('LaunchTime')) or 0:.0f}",
    }
    stopped_at = transition_time(inst.get("StateTransitionReason", ""))
    if stopped_at is not None and state in (BoxState.STOPPED, BoxState.TERMINATED):
        # When it really stopped (by the idle agent at 3 a.m., say), for cost so far.
        extra["stopped_at"] = f"{stopped_at:.0f}"
    interruption = interruption_from_instance(inst)
    if interruption is not None:
        # status shows it, with how to resume (a persistent request keeps the disk).
        extra["interrupted"] = interruption.action
    return Box(
        name=tag_value(inst, BOX_TAG) or inst["InstanceId"],
        provider="aws",
        state=state,
        type=inst.get("InstanceType"),
        region=region,
        address=settings.ssh_address or inst.get("PublicIpAddress"),
        id=inst["InstanceId"],
        launched_at=_epoch(inst.get("LaunchTime")) if state is BoxState.RUNNING else None,
        created_at=root_attach,
        price_per_hour=price_per_hour,
        spot=inst.get("InstanceLifecycle") == "spot",
        disk_gb=disk_gb,
        image_id=inst.get("ImageId"),
        extra=tuple(sorted((k, v) for k, v in extra.items() if v)),
    )
