"""A box that changes size: another GPU type, a bigger root disk, every file kept.

EC2 changes an instance's type only while it is stopped (moto would also change a
running one: gpubox checks the state itself). The root disk only grows (modify_volume);
its filesystem follows on the next boot, where cloud-init's growpart and resizefs
modules (on by default on Ubuntu and the Deep Learning AMI) grow the partition and the
filesystem to the disk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gpubox.errors import GpuboxError, InvalidInput, NotFound
from gpubox.providers.aws import catalog, instances
from gpubox.providers.aws.session import aws_errors, client
from gpubox.providers.base import Box, Progress

if TYPE_CHECKING:
    from gpubox.config import Settings


@dataclass(frozen=True)
class ResizePlan:
    box: Box
    old_type: str
    new_type: str
    disk_from: int | None
    disk_to: int | None  # None: the disk stays as it is
    per_hour: float | None  # the new type's on-demand $/h

    @property
    def changes_type(self) -> bool:
        return self.new_type != self.old_type

    @property
    def grows_disk(self) -> bool:
        return self.disk_to is not None and self.disk_to != self.disk_from


def root_volume_id(inst: dict[str, Any]) -> str | None:
    for mapping in inst.get("BlockDeviceMappings", []):
        if mapping.get("DeviceName") == inst.get("RootDeviceName") and "Ebs" in mapping:
            return mapping["Ebs"]["VolumeId"]
    return None


def check_type(settings: Settings, box: Box, new_type: str, zone: str) -> catalog.GpuType:
    """A GPU type (did-you-mean for a typo, refused without an NVIDIA GPU), of the box's
    architecture, offered in the box's zone."""
    region = box.region or ""
    wanted = catalog.gpu_type(settings, new_type, region)
    if box.type and box.type != new_type:
        current = catalog.gpu_type(settings, box.type, region)
        if current.arch != wanted.arch:
            raise InvalidInput(
                f"{new_type} is {wanted.arch}; box '{box.name}' runs {current.arch} software",
                hint="pick a type of the same architecture (`gpubox types` lists them)",
            )
    zones = catalog.offered_in(settings, new_type, region)
    if zone not in zones:
        raise NotFound(
            f"{new_type} is not offered in {zone}, the zone of box '{box.name}'",
            hint=f"it is offered in {', '.join(zones) or 'no zone of ' + region}; "
            "`gpubox types` lists what is offered",
        )
    return wanted


def plan(settings: Settings, box: Box, inst: dict[str, Any], new_type: str | None,
         disk_gb: int | None) -> ResizePlan:  # fmt: skip
    """Check everything before anything changes; raises on a bad type or a shrink."""
    old_type = inst.get("InstanceType", box.type or "")
    target = new_type or old_type
    if not new_type and disk_gb is None:
        raise InvalidInput("nothing to change", hint="pass --type T and/or --disk GB")
    if new_type and new_type != old_type:
        if inst.get("InstanceLifecycle") == "spot":
            raise InvalidInput(
                f"box '{box.name}' is a spot instance; EC2 never changes a spot instance's type",
                hint=f"save it (`gpubox image {box.name} --as NAME --stop`) and "
                f"`gpubox up NEW --image NAME --type {new_type} --spot`",
            )
        check_type(settings, box, new_type, inst["Placement"]["AvailabilityZone"])
    if (not new_type or new_type == old_type) and (disk_gb is None or disk_gb == box.disk_gb):
        disk = f" with a {box.disk_gb} GB disk" if box.disk_gb else ""
        raise InvalidInput(
            f"box '{box.name}' is a {old_type}{disk} already: nothing to change, and nothing "
            "was stopped",
            hint="pass another --type, or a bigger --disk",
        )
    if disk_gb is not None and box.disk_gb and disk_gb < box.disk_gb:
        raise InvalidInput(
            f"the disk of box '{box.name}' is {box.disk_gb} GB; a disk never shrinks to {disk_gb}",
            hint=f"pass --disk {box.disk_gb} or more (or leave --disk out)",
        )
    price = catalog.on_demand_price(settings, target, box.region or "")
    return ResizePlan(box, old_type, target, box.disk_gb, disk_gb, price.value if price else None)


def apply(settings: Settings, resize: ResizePlan, say: Progress) -> None:
    """Change the type and grow the root disk of a stopped instance."""
    box = resize.box
    region, iid = box.region or "", box.id or ""
    inst = instances.describe(settings, region, iid)
    if inst["State"]["Name"] != "stopped":
        raise GpuboxError(
            f"box '{box.name}' is {inst['State']['Name']}; EC2 changes a type only when stopped",
            hint=f"`gpubox stop {box.name}` first",
        )
    ec2 = client(settings, "ec2", region)
    if resize.changes_type:
        say(f"changing {iid} from {resize.old_type} to {resize.new_type}")
        with aws_errors(f"changing the type of {iid}"):
            ec2.modify_instance_attribute(InstanceId=iid, InstanceType={"Value": resize.new_type})
    if resize.grows_disk:
        volume_id = root_volume_id(inst)
        if volume_id is None:
            raise GpuboxError(f"{iid} has no EBS root disk to grow")
        say(f"growing the disk from {resize.disk_from} to {resize.disk_to} GB "
            "(the filesystem grows as it boots)")  # fmt: skip
        with aws_errors(f"growing disk {volume_id}"):
            ec2.modify_volume(VolumeId=volume_id, Size=resize.disk_to)
