"""Data volumes: a named, encrypted gp3 disk that outlives every box it is attached to.

`up NAME --volume data:200` makes the volume `data` once (tag gpubox:volume=data), in
the box's zone, and attaches it; the box formats it only when it is new and mounts it at
~/data (remote/data_volume.py). `down` keeps it. The next box with `--volume data` gets the same
disk: launched in its zone when possible, else the volume moves to the box's zone through
a snapshot (the old one is deleted only once the new one exists). A volume only grows.
A volume never carries the gpubox:box tag, so `gc` never counts it as a leftover.

One volume per name per account, whatever runs at once: `up` checks the volume before it
launches anything (under a per-volume lock on this computer, so a second `up` of the same
volume waits and then refuses before launching), makes a new one with a ClientToken from
the account, region, name, zone and size (two laptops asking together get one volume from
AWS), and then looks for a second volume of the name (the oldest stays; the one this
process made is deleted while it is new and empty). Volumes are looked for in every
enabled region, so a new HOME sees them all.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from gpubox import inflight
from gpubox.errors import GpuboxError, InvalidInput, NotFound
from gpubox.providers.aws.instances import client_token
from gpubox.providers.aws.inventory import each_region
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
    name, colon, size_text = text.strip().partition(":")
    if not name:
        raise InvalidInput(
            f"--volume '{text}' names no volume",
            hint="give it a name (and a size in GiB the first time), e.g. --volume data:200; "
            "or leave --volume out for a box without a data volume",
        )
    if not NAME_RE.match(name):
        raise InvalidInput(
            f"'{name}' is not a valid volume name",
            hint="lowercase letters, digits and '-', up to 39, e.g. --volume data:200",
        )
    if not colon:
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
    created: str = ""  # CreateTime, ISO 8601: of two volumes of one name, the older stays
    instance_state: str = ""  # the state of the instance it is attached to

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
        states: dict[str, str] = {}
        if attached:
            pages = ec2.describe_instances(InstanceIds=attached)["Reservations"]
            held = [i for r in pages for i in r["Instances"]]
            boxes = {i["InstanceId"]: tag_value(i, BOX_TAG) for i in held}
            states = {i["InstanceId"]: i["State"]["Name"] for i in held}
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
                created=_iso(item.get("CreateTime")),
                instance_state=states.get(instance_id, "") if instance_id else "",
            )
        )
    return out


def _iso(when: Any) -> str:
    if when is None:
        return ""
    return when.isoformat() if hasattr(when, "isoformat") else str(when)


def list_volumes(
    settings: Settings,
    regions: list[str],
    name: str | None = None,
    on_failure: Callable[[str, GpuboxError], None] | None = None,
) -> list[Volume]:
    """gpubox's data volumes (one name's, or all) in these regions, asked in parallel (one
    DescribeVolumes each, one DescribeInstances where some are attached), by name. A region
    that cannot be asked goes to on_failure; when none can, the first error is raised."""
    wanted = {"Name": f"tag:{VOLUME_TAG}", "Values": [name]} if name else {
        "Name": "tag-key", "Values": [VOLUME_TAG]}  # fmt: skip
    answers = each_region(regions, lambda r: _described(settings, r, [wanted]), on_failure)
    found = [v for r in answers.values() for v in r]
    return sorted(found, key=lambda v: (v.name, v.region, v.created, v.id))


def volumes_of_box(settings: Settings, region: str, instance_ids: list[str]) -> list[Volume]:
    """The data volumes attached to any of these instances (a box's nodes): one call."""
    ids = [i for i in instance_ids if i]
    if not ids:
        return []
    return _described(settings, region, [
        {"Name": "tag-key", "Values": [VOLUME_TAG]},
        {"Name": "attachment.instance-id", "Values": ids},
    ])  # fmt: skip


def attached_to(settings: Settings, region: str, instance_id: str) -> list[Volume]:
    """The data volumes attached to one instance."""
    return volumes_of_box(settings, region, [instance_id])


def _live(found: list[Volume]) -> list[Volume]:
    return [v for v in found if v.state not in ("deleting", "deleted", "error")]


def oldest_first(found: list[Volume]) -> list[Volume]:
    """Of several volumes of one name, the one to keep first: both sides of a race agree.
    The oldest; made in the same instant (a clock to the second), one already attached."""
    return sorted(found, key=lambda v: (v.created, not v.instance_id, v.id))


def _describe_one(vol: Volume) -> str:
    where = f"attached to box '{vol.box or vol.instance_id}'" if vol.instance_id else "not attached"
    made = f", made {vol.created[:16].replace('T', ' ')}" if vol.created else ""
    return f"{vol.id} ({vol.region}, {vol.zone}, {vol.size_gb} GiB, {where}{made})"


class DuplicateVolumes(GpuboxError):
    """Several volumes carry one name (an older gpubox made them in a race): the user keeps
    one; gpubox never picks which data to delete."""

    def __init__(self, name: str, found: list[Volume]) -> None:
        ordered = oldest_first(found)
        spare = [v for v in ordered if not v.instance_id][-1:] or ordered[-1:]
        super().__init__(
            f"there are {len(found)} volumes named '{name}': "
            + "; ".join(_describe_one(v) for v in ordered),
            hint=f"look at their files, keep one and delete the other: "
            f"`gpubox volume rm {name} --id {spare[0].id}` (`gpubox volumes` lists them)",
        )
        self.name = name
        self.volumes = ordered


def find_volume(
    settings: Settings, regions: list[str], name: str, *, volume_id: str | None = None,
    instance_id: str | None = None,
) -> Volume | None:  # fmt: skip
    """The volume called `name` in these regions (None: there is none). Several of one
    name: the one `volume_id` picks, else the one attached to `instance_id` (a box that
    has it already), else DuplicateVolumes naming them all and the way out."""
    found = _live(list_volumes(settings, regions, name))
    if volume_id is not None:
        picked = [v for v in found if v.id == volume_id]
        if not picked:
            ids = ", ".join(v.id for v in found) or "none"
            raise NotFound(f"volume '{name}' has no copy {volume_id} (its ids: {ids})",
                           hint="`gpubox volumes` lists every volume with its id")  # fmt: skip
        return picked[0]
    if len(found) > 1:
        mine = [v for v in found if instance_id and v.instance_id == instance_id]
        if len(mine) == 1:
            return mine[0]
        raise DuplicateVolumes(name, found)
    return found[0] if found else None


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
    *, snapshot_id: str | None = None, delay: float = 5, account: str = "", note: str = "new",
) -> Volume:  # fmt: skip
    """A new volume, with a ClientToken from the account, region and name: another laptop
    asking for the same new volume at the same time gets the same volume back from AWS
    (or, having asked with another zone or size, IdempotentParameterMismatch, and then
    the volume the first one made). A token whose volume was deleted since is followed by
    a fresh one, so a volume removed and made again is a new volume."""
    ec2 = client(settings, "ec2", region)
    made: dict[str, Any] = {}
    for attempt in range(4):
        params: dict[str, Any] = {
            "AvailabilityZone": zone,
            "Size": size_gb,
            "VolumeType": "gp3",
            "Encrypted": True,
            "TagSpecifications": [{"ResourceType": "volume", "Tags": volume_tags(name, owner)}],
            "ClientToken": client_token(account, region, f"volume-{name}",
                                        f"{snapshot_id or 'new'}/{attempt}", "gp3", None),
        }  # fmt: skip
        if snapshot_id:
            params["SnapshotId"] = snapshot_id
        inflight.step(f"creating volume '{name}' in {zone} (it may exist already)")
        try:
            with aws_errors(f"creating volume '{name}' in {zone}"):
                made = ec2.create_volume(**params)
        except GpuboxError as exc:
            if "IdempotentParameterMismatch" not in exc.message:
                raise
            racers = _live(_described(settings, region, [
                {"Name": f"tag:{VOLUME_TAG}", "Values": [name]}]))  # fmt: skip
            if racers and not snapshot_id:  # another laptop made it first, elsewhere or larger
                raise MadeByARacer(oldest_first(racers)[0]) from exc
            continue  # the token's volume is gone: a new token
        if made.get("State") not in ("deleting", "deleted", "error"):
            break
    else:
        raise GpuboxError(f"AWS gave back only deleted volumes for '{name}' in {zone}",
                          hint="run the command again in a minute")  # fmt: skip
    vol = Volume(name, made["VolumeId"], region, made.get("AvailabilityZone", zone),
                 int(made.get("Size") or size_gb), made.get("State", "creating"),
                 created=_iso(made.get("CreateTime")))  # fmt: skip
    inflight.made("volume", vol.id, region, per_month=vol.per_month,
                  note=f"data volume '{name}', {vol.size_gb} GiB, {note}")  # fmt: skip
    if vol.state == "creating":
        _wait(settings, region, "volume_available", delay, VolumeIds=[vol.id])
        vol = replace(vol, state="available")
    return vol


class MadeByARacer(GpuboxError):
    """CreateVolume answered that this name's token was used with other parameters: the
    volume another `up` made at the same time (another zone, size or user)."""

    def __init__(self, volume: Volume) -> None:
        super().__init__(f"volume '{volume.name}' was made meanwhile by another gpubox ({volume.id})")
        self.volume = volume


def keep_oldest(
    settings: Settings, regions: list[str], mine: Volume, say: Progress = _quiet, delay: float = 5
) -> Volume:
    """After making a volume, one volume per name: when another of the name is older (a
    racing `up` on another laptop made it), the one made here (new, empty, attached to
    nothing) is deleted at once and the older one is the volume. Both sides agree."""
    inflight.step(f"checking that volume '{mine.name}' ({mine.id}, made) is the only one")
    found = _live(list_volumes(settings, regions, mine.name))
    if mine.id not in {v.id for v in found}:
        found.append(mine)
    keep = oldest_first(found)[0]
    if keep.id == mine.id:
        return mine
    say(f"another gpubox made volume '{mine.name}' first ({keep.id}, {keep.zone}); "
        f"deleting the one made here ({mine.id}), new and empty")  # fmt: skip
    delete_volume(settings, mine, say, delay)
    inflight.gone("volume", mine.id)
    return keep


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
    inflight.made("snapshot", snap, vol.region, note=f"of volume '{vol.name}', being moved")
    _wait(settings, vol.region, "snapshot_completed", delay, SnapshotIds=[snap])
    moved = create_volume(settings, vol.region, zone, vol.name, vol.size_gb, owner,
                          snapshot_id=snap, delay=delay, note=f"the copy of {vol.id} in {zone}")  # fmt: skip
    say(f"volume '{vol.name}' is now {moved.id} in {zone}; deleting the old {vol.id}")
    with aws_errors(f"deleting the old volume {vol.id}"):
        ec2.delete_volume(VolumeId=vol.id)
    inflight.gone("volume", vol.id)
    with aws_errors(f"deleting snapshot {snap}"):
        ec2.delete_snapshot(SnapshotId=snap)
    inflight.gone("snapshot", snap)
    return moved


def _free_device(inst: dict[str, Any]) -> str:
    used = {m.get("DeviceName") for m in inst.get("BlockDeviceMappings", [])}
    for name in DEVICE_NAMES:
        if name not in used and name.replace("/dev/sd", "/dev/xvd") not in used:
            return name
    raise GpuboxError(f"{inst['InstanceId']} has no free device name for another volume")


def _attached_elsewhere(vol: Volume) -> GpuboxError:
    return GpuboxError(
        f"volume '{vol.name}' is attached to box '{vol.box or vol.instance_id}'; "
        "a volume is attached to one box at a time",
        hint=f"`gpubox down {vol.box}` keeps the volume and lets it go" if vol.box else None,
    )


def attach(
    settings: Settings, vol: Volume, inst: dict[str, Any], say: Progress = _quiet, delay: float = 5
) -> Volume:
    """Attach to the instance (nothing to do when it already is there). The volume is
    asked again first, and after: another box that took it meanwhile is an error."""
    instance_id = inst["InstanceId"]
    vol = _refresh(settings, vol)
    if vol.instance_id == instance_id:
        return vol
    if vol.instance_id:
        raise _attached_elsewhere(vol)
    if vol.state == "creating":
        wait_available(settings, vol, delay)
    device = _free_device(inst)
    say(f"attaching volume '{vol.name}' ({vol.id}, {vol.size_gb} GiB) as {device}")
    inflight.step(f"attaching volume '{vol.name}' to '{tag_value(inst, BOX_TAG) or instance_id}'")
    try:
        with aws_errors(f"attaching volume {vol.id}"):
            client(settings, "ec2", vol.region).attach_volume(
                VolumeId=vol.id, InstanceId=instance_id, Device=device
            )
    except GpuboxError as exc:
        if "VolumeInUse" not in exc.message:
            raise
        raise _attached_elsewhere(_refresh(settings, vol)) from exc  # another box took it
    _wait(settings, vol.region, "volume_in_use", delay, VolumeIds=[vol.id])
    done = _refresh(settings, vol)
    if done.instance_id != instance_id:
        raise _attached_elsewhere(done)
    return done


def wait_available(settings: Settings, vol: Volume, delay: float = 5) -> None:
    _wait(settings, vol.region, "volume_available", delay, VolumeIds=[vol.id])


def delete_volume(settings: Settings, vol: Volume, say: Progress = _quiet, delay: float = 5) -> None:
    """Delete a volume that no instance holds (a terminating box lets go of it first)."""
    current = _refresh(settings, vol)
    if current.state == "in-use" and current.instance_state in ("shutting-down", "terminated"):
        say(f"volume '{vol.name}' is let go by the terminated {current.instance_id}; waiting")
        wait_available(settings, current, delay)  # `down X --yes && gpubox volume rm V --yes`
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


def check_request(
    settings: Settings, regions: list[str], request: VolumeRequest, region: str | None = None,
    instance_id: str | None = None,
) -> Volume | None:  # fmt: skip
    """Whether the box can have this volume, asked before anything is launched or started:
    the volume (None: it is to be made), or an error when it cannot be had: attached to
    another box, in another region than the one asked for, smaller than it is, or
    several volumes of the name (the error names them and the way out)."""
    found = find_volume(settings, regions, request.name, instance_id=instance_id)
    if found is None:
        return None
    refuse_shrink(found, request.size_gb)
    if region and region != found.region:
        raise GpuboxError(
            f"volume '{found.name}' is in {found.region}, not {region}",
            hint=f"pass --region {found.region}; gpubox moves a volume between zones, "
            "not regions",
        )
    if found.instance_id and found.instance_id != instance_id:
        raise _attached_elsewhere(found)
    return found


def prepare(
    settings: Settings,
    regions: list[str],
    request: VolumeRequest,
    inst: dict[str, Any],
    region: str,
    owner: str,
    say: Progress = _quiet,
    delay: float = 5,
    account: str = "",
) -> Prepared:
    """The volume for a box (made, grown or moved as needed), attached to its instance.
    `regions`: where to look for the volume (every region: a volume made elsewhere is
    found, never made twice)."""
    zone = inst["Placement"]["AvailabilityZone"]
    instance_id = inst["InstanceId"]
    vol = check_request(settings, regions, request, region, instance_id)
    created = False
    if vol is None:
        size = request.size_gb or 100
        say(f"creating volume '{request.name}' ({size} GiB gp3, encrypted) in {zone}")
        record = inflight.current()
        undo = record.undo
        if undo and "gpubox down " in undo:  # the undo of an `up` removes the new volume too
            record.undo = f"{undo} && gpubox volume rm {request.name} --yes"
        try:
            mine: Volume | None = create_volume(settings, region, zone, request.name, size, owner,
                                                delay=delay, account=account)  # fmt: skip
            vol = keep_oldest(settings, sorted({region, *regions}), mine, say, delay)
        except MadeByARacer as raced:
            say(raced.message)
            mine, vol = None, raced.volume
        created = mine is not None and vol.id == mine.id
        if not created:  # a racer's: not this command's to undo, and one this box can have
            record.undo = undo
            vol = check_request(settings, [vol.region], VolumeRequest(vol.name), region,
                                instance_id) or vol  # fmt: skip
            if vol.zone != zone:  # never moved under a racer that is about to attach it
                raise GpuboxError(
                    f"volume '{vol.name}' was made at the same time by another gpubox, in "
                    f"{vol.zone}; this box is in {zone}",
                    hint=f"`gpubox volumes` shows which box has it; run the command again to "
                    f"launch in {vol.zone} once it is free",
                )
    else:
        vol = grow_volume(settings, vol, request.size_gb, say)
    if not created:
        inflight.made("volume", vol.id, vol.region, per_month=vol.per_month,
                      note=f"data volume '{vol.name}', {vol.size_gb} GiB, yours: the undo keeps it")
    if vol.zone != zone and vol.instance_id != instance_id:
        vol = move_volume(settings, vol, zone, owner, say, delay)
    try:
        return Prepared(attach(settings, vol, inst, say, delay), created)
    except GpuboxError:
        if created:  # new and empty, never mounted: it does not stay to bill for nothing
            with contextlib.suppress(GpuboxError):
                delete_volume(settings, vol, say, delay)
                inflight.gone("volume", vol.id)
        raise
