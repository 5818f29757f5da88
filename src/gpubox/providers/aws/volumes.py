"""Data volumes: a named, encrypted gp3 disk that outlives every box it is attached to.

`up NAME --volume data:200` makes the volume `data` once (tag gpubox:volume=data), in
the box's zone, and attaches it; the box formats it only when it is new and mounts it at
~/data (remote/data_volume.py). `down` keeps it. The next box with `--volume data` gets the same
disk: launched in its zone when possible, else the volume moves to the box's zone through
a snapshot (the old one is deleted only once the new one exists). A volume only grows.
A volume never carries the gpubox:box tag, so `gc` never counts it as a leftover.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from gpubox.errors import GpuboxError, InvalidInput, NotFound
from gpubox.providers.aws.network import (
    BOX_TAG,
    KIND_TAG,
    OWNER_TAG,
    VOLUME_TAG,
    tag_value,
)
from gpubox.providers.aws.session import aws_errors, client
from gpubox.providers.base import Progress

if TYPE_CHECKING:
    from gpubox.config import Settings

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,38}$")
KIND = "data-volume"
# Where a data volume goes on the instance (Nitro renames it /dev/nvmeXn1 anyway).
DEVICE_NAMES = tuple(f"/dev/sd{c}" for c in "fghijklmnop")
MAX_GB = 16384  # gp3's largest


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class VolumeRequest:
    """`--volume NAME[:GiB]`: the volume's name, and the size wanted (None: as it is)."""

    name: str
    size_gb: int | None = None


def parse_request(text: str) -> VolumeRequest:
    name, _, size_text = text.strip().partition(":")
    if not NAME_RE.match(name):
        raise InvalidInput(
            f"'{name}' is not a valid volume name",
            hint="lowercase letters, digits and '-', e.g. --volume data:200",
        )
    if not size_text:
        return VolumeRequest(name)
    if not size_text.isdigit() or not 1 <= int(size_text) <= MAX_GB:
        raise InvalidInput(
            f"--volume {text}: the size must be a number of GiB from 1 to {MAX_GB}",
            hint="e.g. --volume data:200",
        )
    return VolumeRequest(name, int(size_text))


@dataclass(frozen=True)
class Volume:
    name: str
    id: str
    region: str
    zone: str
    size_gb: int
    state: str  # creating | available | in-use | ...
    instance_id: str | None = None
    box: str | None = None  # the box it is attached to
    encrypted: bool = True

    @property
    def per_month(self) -> float:
        from gpubox.providers.aws import catalog

        return round(self.size_gb * catalog.storage_price_per_gb_month(self.region), 2)

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "per_month": self.per_month}


def volume_tags(name: str, owner: str) -> list[dict[str, str]]:
    return [
        {"Key": VOLUME_TAG, "Value": name},
        {"Key": OWNER_TAG, "Value": owner},
        {"Key": KIND_TAG, "Value": KIND},
        {"Key": "Name", "Value": f"gpubox-volume-{name}"},
    ]


def _described(settings: Settings, region: str, filters: list[dict]) -> list[Volume]:
    ec2 = client(settings, "ec2", region)
    with aws_errors(f"listing volumes in {region}"):
        found = ec2.describe_volumes(Filters=filters)["Volumes"]
        attached = sorted({a["InstanceId"] for v in found for a in v.get("Attachments", [])})
        boxes: dict[str, str | None] = {}
        if attached:
            pages = ec2.describe_instances(InstanceIds=attached)["Reservations"]
            boxes = {i["InstanceId"]: tag_value(i, BOX_TAG) for r in pages for i in r["Instances"]}
    out = []
    for item in found:
        attachment = next(iter(item.get("Attachments", [])), {})
        instance_id = attachment.get("InstanceId")
        out.append(
            Volume(
                name=tag_value(item, VOLUME_TAG) or item["VolumeId"],
                id=item["VolumeId"],
                region=region,
                zone=item["AvailabilityZone"],
                size_gb=int(item["Size"]),
                state=item["State"],
                instance_id=instance_id,
                box=boxes.get(instance_id) if instance_id else None,
                encrypted=bool(item.get("Encrypted")),
            )
        )
    return out


def list_volumes(settings: Settings, regions: list[str], name: str | None = None) -> list[Volume]:
    """gpubox's data volumes (one name's, or all) in these regions, by name."""
    wanted = {"Name": f"tag:{VOLUME_TAG}", "Values": [name]} if name else {
        "Name": "tag-key", "Values": [VOLUME_TAG]}  # fmt: skip
    found = [v for r in regions for v in _described(settings, r, [wanted])]
    return sorted(found, key=lambda v: (v.name, v.region, v.id))


def find_volume(settings: Settings, regions: list[str], name: str) -> Volume | None:
    found = [v for v in list_volumes(settings, regions, name) if v.state != "deleting"]
    if len(found) > 1:
        where = ", ".join(f"{v.id} ({v.zone})" for v in found)
        raise GpuboxError(
            f"there are {len(found)} volumes named '{name}': {where}",
            hint="keep one: `aws ec2 delete-volume --volume-id ...` the other after checking it",
        )
    return found[0] if found else None


def attached_to(settings: Settings, region: str, instance_id: str) -> list[Volume]:
    """The data volumes attached to one instance."""
    return _described(settings, region, [
        {"Name": "tag-key", "Values": [VOLUME_TAG]},
        {"Name": "attachment.instance-id", "Values": [instance_id]},
    ])  # fmt: skip


def _refresh(settings: Settings, vol: Volume) -> Volume:
    found = _described(settings, vol.region, [{"Name": "volume-id", "Values": [vol.id]}])
    if not found:
        raise NotFound(f"volume '{vol.name}' ({vol.id}) no longer exists")
    return found[0]


def _wait(settings: Settings, region: str, waiter: str, delay: float, **ids: Any) -> None:
    with aws_errors(f"waiting for {waiter.replace('_', ' ')}"):
        client(settings, "ec2", region).get_waiter(waiter).wait(
            **ids, WaiterConfig={"Delay": max(delay, 0.01), "MaxAttempts": 120}
        )


def create_volume(
    settings: Settings, region: str, zone: str, name: str, size_gb: int, owner: str,
    *, snapshot_id: str | None = None, delay: float = 5,
) -> Volume:  # fmt: skip
    params: dict[str, Any] = {
        "AvailabilityZone": zone,
        "Size": size_gb,
        "VolumeType": "gp3",
        "Encrypted": True,
        "TagSpecifications": [{"ResourceType": "volume", "Tags": volume_tags(name, owner)}],
    }
    if snapshot_id:
        params["SnapshotId"] = snapshot_id
    with aws_errors(f"creating volume '{name}' in {zone}"):
        made = client(settings, "ec2", region).create_volume(**params)
    _wait(settings, region, "volume_available", delay, VolumeIds=[made["VolumeId"]])
    return Volume(name, made["VolumeId"], region, zone, size_gb, "available")


def refuse_shrink(vol: Volume, size_gb: int | None) -> None:
    if size_gb is not None and size_gb < vol.size_gb:
        raise InvalidInput(
            f"volume '{vol.name}' is {vol.size_gb} GiB; a volume never shrinks to {size_gb} GiB",
            hint=f"pass --volume {vol.name} (or :{vol.size_gb} or more); to start smaller, "
            f"copy what you need off it and `gpubox volume rm {vol.name}`",
        )


def grow_volume(settings: Settings, vol: Volume, size_gb: int | None, say: Progress = _quiet) -> Volume:
    """Grow to size_gb; the same size is nothing to do; smaller is refused (never shrinks)."""
    refuse_shrink(vol, size_gb)
    if size_gb is None or size_gb == vol.size_gb:
        return vol
    say(f"growing volume '{vol.name}' from {vol.size_gb} to {size_gb} GiB")
    with aws_errors(f"growing volume {vol.id}"):
        client(settings, "ec2", vol.region).modify_volume(VolumeId=vol.id, Size=size_gb)
    return replace(vol, size_gb=size_gb)


def move_volume(
    settings: Settings, vol: Volume, zone: str, owner: str, say: Progress = _quiet, delay: float = 5
) -> Volume:
    """The same data in another zone of the region, through a snapshot. The old volume is
    deleted only after the new one exists; the snapshot after that."""
    if vol.instance_id:
        raise GpuboxError(
            f"volume '{vol.name}' is attached to {vol.box or vol.instance_id}; it cannot move now",
            hint=f"`gpubox down {vol.box}` keeps the volume and lets it go" if vol.box else None,
        )
    ec2 = client(settings, "ec2", vol.region)
    say(f"volume '{vol.name}' is in {vol.zone}, the box in {zone}: moving it through a snapshot")
    with aws_errors(f"snapshotting volume {vol.id}"):
        snap = ec2.create_snapshot(
            VolumeId=vol.id,
            Description=f"gpubox: moving volume '{vol.name}' to {zone}",
            TagSpecifications=[{"ResourceType": "snapshot", "Tags": volume_tags(vol.name, owner)}],
        )["SnapshotId"]
    _wait(settings, vol.region, "snapshot_completed", delay, SnapshotIds=[snap])
    moved = create_volume(settings, vol.region, zone, vol.name, vol.size_gb, owner,
                          snapshot_id=snap, delay=delay)  # fmt: skip
    say(f"volume '{vol.name}' is now {moved.id} in {zone}; deleting the old {vol.id}")
    with aws_errors(f"deleting the old volume {vol.id}"):
        ec2.delete_volume(VolumeId=vol.id)
    with aws_errors(f"deleting snapshot {snap}"):
        ec2.delete_snapshot(SnapshotId=snap)
    return moved


def _free_device(inst: dict[str, Any]) -> str:
    used = {m.get("DeviceName") for m in inst.get("BlockDeviceMappings", [])}
    for name in DEVICE_NAMES:
        if name not in used and name.replace("/dev/sd", "/dev/xvd") not in used:
            return name
    raise GpuboxError(f"{inst['InstanceId']} has no free device name for another volume")


def attach(
    settings: Settings, vol: Volume, inst: dict[str, Any], say: Progress = _quiet, delay: float = 5
) -> Volume:
    """Attach to the instance (nothing to do when it already is there)."""
    instance_id = inst["InstanceId"]
    if vol.instance_id == instance_id:
        return vol
    if vol.instance_id:
        raise GpuboxError(
            f"volume '{vol.name}' is attached to box '{vol.box or vol.instance_id}'; "
            "a volume is attached to one box at a time",
            hint=f"`gpubox down {vol.box}` keeps the volume and lets it go" if vol.box else None,
        )
    device = _free_device(inst)
    say(f"attaching volume '{vol.name}' ({vol.id}, {vol.size_gb} GiB) as {device}")
    with aws_errors(f"attaching volume {vol.id}"):
        client(settings, "ec2", vol.region).attach_volume(
            VolumeId=vol.id, InstanceId=instance_id, Device=device
        )
    _wait(settings, vol.region, "volume_in_use", delay, VolumeIds=[vol.id])
    return _refresh(settings, vol)


def wait_available(settings: Settings, vol: Volume, delay: float = 5) -> None:
    _wait(settings, vol.region, "volume_available", delay, VolumeIds=[vol.id])


def delete_volume(settings: Settings, vol: Volume, say: Progress = _quiet, delay: float = 5) -> None:
    """Delete a volume that no instance holds (a terminating box lets go of it first)."""
    current = _refresh(settings, vol)
    if current.state == "in-use":
        raise GpuboxError(
            f"volume '{vol.name}' is attached to box '{current.box or current.instance_id}'",
            hint=f"`gpubox down {current.box} --delete-volume` deletes both" if current.box else None,
        )
    say(f"deleting volume '{vol.name}' ({vol.id}, {vol.size_gb} GiB)")
    with aws_errors(f"deleting volume {vol.id}"):
        client(settings, "ec2", vol.region).delete_volume(VolumeId=vol.id)
    _wait(settings, vol.region, "volume_deleted", delay, VolumeIds=[vol.id])


@dataclass(frozen=True)
class Prepared:
    volume: Volume
    created: bool


def prepare(
    settings: Settings,
    regions: list[str],
    request: VolumeRequest,
    inst: dict[str, Any],
    region: str,
    owner: str,
    say: Progress = _quiet,
    delay: float = 5,
) -> Prepared:
    """The volume for a box (made, grown or moved as needed), attached to its instance."""
    zone = inst["Placement"]["AvailabilityZone"]
    vol = find_volume(settings, regions, request.name)
    created = vol is None
    if vol is None:
        size = request.size_gb or 100
        say(f"creating volume '{request.name}' ({size} GiB gp3, encrypted) in {zone}")
        vol = create_volume(settings, region, zone, request.name, size, owner, delay=delay)
    elif vol.region != region:
        raise GpuboxError(
            f"volume '{request.name}' is in {vol.region}, the box in {region}",
            hint=f"pass --region {vol.region}; gpubox moves a volume between zones, "
            "not regions",
        )
    else:
        vol = grow_volume(settings, vol, request.size_gb, say)
        if vol.zone != zone and vol.instance_id != inst["InstanceId"]:
            vol = move_volume(settings, vol, zone, owner, say, delay)
    return Prepared(attach(settings, vol, inst, say, delay), created)
