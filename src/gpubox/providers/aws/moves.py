"""A stopped box whose zone has no capacity, brought up in another zone of its region.

`gpubox start NAME --move`: the disk is imaged (a saved image named NAME-move-..., so
an interrupted move shows in `gpubox images`), the same box is launched from it in
another zone that offers its type (same name, key pair, security group, type and
tags), its data volumes follow through a snapshot, and the image is removed. The old
instance is renamed NAME-old and stays, stopped, until the user says yes to deleting it
(`gpubox down NAME-old` later). Zones only: moving to another region would also need
the key pair, security group and image copied there, which gpubox does not do.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gpubox import inflight
from gpubox.errors import CapacityError, GpuboxError
from gpubox.providers.aws import catalog, failover, instances, volumes
from gpubox.providers.aws.images import resolve_image
from gpubox.providers.aws.network import BOX_TAG, OWNER_TAG, tag_value
from gpubox.providers.aws.resize import root_volume_id
from gpubox.providers.aws.saved_images import create_saved_image, remove_saved_image
from gpubox.providers.aws.session import aws_errors, caller_identity, client
from gpubox.providers.base import Box, BoxSpec, BoxState


@dataclass(frozen=True)
class Moved:
    box: Box  # the box, now in its new zone
    old_name: str  # what the old instance is called until it is deleted
    old_id: str
    old_deleted: bool


def old_name_for(name: str) -> str:
    return f"{name[:35]}-old"


def move(
    provider: Any, box: Box, *, yes: bool = False, confirm: Callable[[str], bool] | None = None
) -> Moved:
    settings, say = provider.settings, provider.say
    inst = provider._current(box)
    if inst["State"]["Name"] != "stopped":
        raise GpuboxError(
            f"box '{box.name}' is {inst['State']['Name']}; only a stopped box is moved",
            hint=f"`gpubox stop {box.name}` first",
        )
    region, old_id = box.region or "", inst["InstanceId"]
    zone, kind = inst["Placement"]["AvailabilityZone"], inst["InstanceType"]
    zones = [z for z in catalog.offered_in(settings, kind, region) if z != zone]
    if not zones:
        raise CapacityError(
            f"no other zone of {region} offers {kind}",
            hint=f"`gpubox start {box.name} --wait`, or another type: --type g6.xlarge",
        )
    owner = tag_value(inst, OWNER_TAG) or caller_identity(settings).get("Arn", "unknown")
    image_name = f"{box.name}-move-{time.strftime('%Y%m%d-%H%M%S')}"
    # Cut short, a move is finished by running it again (it finds the new instance by
    # its tag and goes on from there); stopping the box would leave both, not undo it.
    record = inflight.current()
    record.finish, record.undo = f"gpubox start {box.name} --move", None
    successor = [i for i in instances.find_instances(settings, region, box.name)
                 if i["InstanceId"] != old_id and i["State"]["Name"] in ("pending", "running")]
    if successor:  # an interrupted move made it already: finish that move
        new = successor[0]
        say(f"an earlier move of '{box.name}' made {new['InstanceId']}; finishing that move")
        new = instances.wait_for(settings, region, new["InstanceId"], "running",
                                 provider.wait_delay)  # fmt: skip
    else:
        new = _launch_copy(provider, box, inst, zones, owner, image_name)
    return _after_launch(provider, box, inst, new, owner, zone, yes, confirm)


def _launch_copy(provider: Any, box: Box, inst: dict, zones: list[str], owner: str,
                 image_name: str) -> dict:
    """The box's disk imaged, and the same box launched from it in another zone."""
    settings, say = provider.settings, provider.say
    region, old_id, kind = box.region or "", inst["InstanceId"], inst["InstanceType"]
    say(f"moving '{box.name}' out of {inst['Placement']['AvailabilityZone']}: imaging its "
        f"disk as '{image_name}'")
    with inflight.owning():
        made = create_saved_image(settings, region, box.name, image_name, on_progress=say)
    try:
        gpu = catalog.gpu_type(settings, kind, region)
        ctx = instances.LaunchContext(
            settings=settings, region=region, image=resolve_image(settings, region, image_name, gpu.arch),
            key_name=inst["KeyName"], group_id=inst["SecurityGroups"][0]["GroupId"], owner=owner,
            account=caller_identity(settings).get("Account", ""),
            # The successor of old_id: a token of its own, the same for a re-run of this move.
            generation=f"{inst['SecurityGroups'][0]['GroupId']}/from-{old_id}",
            on_progress=say, wait_delay=provider.wait_delay,
        )  # fmt: skip
        spec = BoxSpec(name=box.name, provider="aws", type=kind, region=region,
                       disk_gb=box.disk_gb or 64, image=image_name,
                       spot=inst.get("InstanceLifecycle") == "spot")  # fmt: skip
        new = failover.launch_with_failover(
            [failover.Attempt(region, z, kind) for z in zones],
            lambda a: instances.launch_attempt(ctx, spec, kind, a.zone),
            on_try=say,
        )
    finally:
        remove_saved_image(settings, made.image)  # the new disk no longer needs it
    return new


def _after_launch(provider: Any, box: Box, inst: dict, new: dict, owner: str, zone: str,
                  yes: bool, confirm: Callable[[str], bool] | None) -> Moved:
    """The old instance renamed NAME-old, the data volumes moved, the old one deleted
    after a yes (else kept, stopped)."""
    settings, say = provider.settings, provider.say
    region, old_id, kind = box.region or "", inst["InstanceId"], inst["InstanceType"]
    old_name = old_name_for(box.name)
    _rename(settings, region, [old_id, root_volume_id(inst) or ""], old_name)
    for vol in volumes.attached_to(settings, region, old_id):
        _detach(settings, vol, old_id, provider.wait_delay)
        volumes.prepare(settings, [region], volumes.VolumeRequest(vol.name), new, region,
                        owner, say, provider.wait_delay)  # fmt: skip
    from gpubox.remote.hostkeys import forget_host_key

    forget_host_key(settings, box.name)  # a new instance: cloud-init makes new host keys
    moved = provider._box(region, new)
    say(f"'{box.name}' is up in {new['Placement']['AvailabilityZone']} ({new['InstanceId']})")
    old_box = Box(old_name, "aws", BoxState.STOPPED, kind, region, id=old_id, disk_gb=box.disk_gb)
    per_month = provider.monthly_storage_cost(old_box)
    question = (f"The old instance {old_id} in {zone} is stopped and kept as '{old_name}'; "
                f"its {box.disk_gb} GB disk costs about ${per_month:.2f}/month. "
                "Delete it now (terminate; that disk goes)?")  # fmt: skip
    deleted = yes or (confirm is not None and confirm(question))
    if deleted:
        provider.terminate(old_box)
    else:
        say(f"kept the old instance as '{old_name}'; `gpubox down {old_name}` deletes it")
    return Moved(moved, old_name, old_id, deleted)


def _rename(settings: Any, region: str, resources: list[str], name: str) -> None:
    with aws_errors(f"renaming {resources[0]} to '{name}'"):
        client(settings, "ec2", region).create_tags(
            Resources=[r for r in resources if r],
            Tags=[{"Key": BOX_TAG, "Value": name}, {"Key": "Name", "Value": f"gpubox-{name}"}],
        )


def _detach(settings: Any, vol: volumes.Volume, instance_id: str, delay: float) -> None:
    with aws_errors(f"detaching volume {vol.id}"):
        client(settings, "ec2", vol.region).detach_volume(VolumeId=vol.id, InstanceId=instance_id)
    volumes.wait_available(settings, vol, delay)
