"""Saved images (S16): an AMI of a box, so a new box starts with CUDA and the environment in place.

Each saved image carries gpubox's tags plus `gpubox:image=NAME`, which is how
`up --image NAME` (images.resolve_image) and `gpubox images` find it. Its snapshots are
tagged too, and go with it: `remove_saved_image` deletes both, or says what it could not.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gpubox.errors import GpuboxError, InvalidInput, NotFound
from gpubox.providers.aws.images import IMAGE_TAG
from gpubox.providers.aws.instances import find_instances
from gpubox.providers.aws.network import BOX_TAG, KIND_TAG, LIVE_STATES, tag_value, tags_for
from gpubox.providers.aws.session import aws_errors, caller_identity, client, error_code
from gpubox.providers.base import Progress

if TYPE_CHECKING:
    from gpubox.config import Settings

IMAGE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
WAIT_SECONDS = 2 * 3600  # a large disk's first image can take most of an hour
POLL_SECONDS = 10.0



@dataclass(frozen=True)
class SavedImage:
    name: str
    image_id: str
    region: str
    state: str
    size_gb: int
    created_at: float | None
    box: str | None  # the box it was made from
    snapshot_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class Removal:
    image: SavedImage
    deregistered: bool
    deleted_snapshots: tuple[str, ...]
    failed: tuple[tuple[str, str], ...]  # (resource id, why)
    used_by: tuple[str, ...]  # boxes launched from it (they keep working)


def check_image_name(name: str) -> str:
    if not IMAGE_NAME_RE.match(name):
        raise InvalidInput(
            f"'{name}' is not a valid image name",
            hint="use letters, digits, '.', '_' and '-', starting with a letter or digit, "
            "at most 63 characters (e.g. 'd2l-ready')",
        )
    return name



def _epoch(text: str | None) -> float | None:
    if not text:
        return None
    import datetime as dt

    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _saved_from(found: dict[str, Any], region: str) -> SavedImage:
    ebs = [m["Ebs"] for m in found.get("BlockDeviceMappings", []) if "Ebs" in m]
    return SavedImage(
        name=tag_value(found, IMAGE_TAG) or found.get("Name") or found["ImageId"],
        image_id=found["ImageId"],
        region=region,
        state=found.get("State", "unknown"),
        size_gb=sum(int(e.get("VolumeSize") or 0) for e in ebs),
        created_at=_epoch(found.get("CreationDate")),
        box=tag_value(found, BOX_TAG),
        snapshot_ids=tuple(e["SnapshotId"] for e in ebs if e.get("SnapshotId")),
    )


def list_saved_images(settings: Settings, regions: Iterable[str]) -> list[SavedImage]:
    """Every saved image in these regions, oldest first."""
    images: list[SavedImage] = []
    for region in regions:
        with aws_errors(f"listing saved images in {region}"):
            found = client(settings, "ec2", region).describe_images(
                Owners=["self"], Filters=[{"Name": "tag-key", "Values": [IMAGE_TAG]}]
            )["Images"]
        images += [_saved_from(i, region) for i in found]
    return sorted(images, key=lambda i: (i.created_at or 0.0, i.name))


def find_saved_image(settings: Settings, regions: Iterable[str], wanted: str) -> SavedImage:
    """The saved image called `wanted` (or with that ami- id); NotFound with the names there are."""
    regions = list(regions)
    images = list_saved_images(settings, regions)
    matches = [i for i in images if wanted in (i.name, i.image_id)]
    if len(matches) > 1:
        raise InvalidInput(
            f"'{wanted}' names {len(matches)} images: "
            + ", ".join(f"{i.image_id} ({i.region})" for i in matches),
            hint="pass the ami- id of the one you mean",
        )
    if not matches:
        from gpubox.errors import did_you_mean

        where = ", ".join(regions) or "no region gpubox has used"
        raise NotFound(
            f"no saved image called '{wanted}' (looked in {where})",
            hint=did_you_mean(wanted, [i.name for i in images])
            or "`gpubox images` lists them; `gpubox image BOX --as NAME` makes one",
        )
    return matches[0]


def boxes_using(settings: Settings, image: SavedImage) -> tuple[str, ...]:
    """Boxes (live instances) launched from this image."""
    with aws_errors(f"looking for boxes launched from {image.image_id}"):
        pages = client(settings, "ec2", image.region).get_paginator("describe_instances")
        found = [
            inst
            for page in pages.paginate(
                Filters=[
                    {"Name": "image-id", "Values": [image.image_id]},
                    {"Name": "instance-state-name", "Values": LIVE_STATES},
                ]
            )
            for r in page["Reservations"]
            for inst in r["Instances"]
        ]
    return tuple(sorted(tag_value(i, BOX_TAG) or i["InstanceId"] for i in found))


def _snapshots_of(ec2: Any, image_id: str, known: Iterable[str]) -> list[str]:
    """The image's snapshots: from its mappings, and by the description CreateImage gives them
    (mappings of an image still pending may not name them yet)."""
    ids = set(known)
    with aws_errors(f"listing the snapshots of {image_id}"):
        found = ec2.describe_snapshots(
            OwnerIds=["self"], Filters=[{"Name": "description", "Values": [f"*{image_id}*"]}]
        )["Snapshots"]
    ids.update(s["SnapshotId"] for s in found)
    return sorted(ids)


def _delete_image_and_snapshots(
    ec2: Any, image_id: str, snapshot_ids: Iterable[str]
) -> tuple[bool, list[str], list[tuple[str, str]]]:
    deleted: list[str] = []
    failed: list[tuple[str, str]] = []
    snapshots = _snapshots_of(ec2, image_id, snapshot_ids)
    try:
        ec2.deregister_image(ImageId=image_id)
        deregistered = True
    except Exception as exc:  # noqa: BLE001 - said to the user, with its reason
        if error_code(exc) == "InvalidAMIID.NotFound":
            deregistered = True
        else:
            failed.append((image_id, error_code(exc) or str(exc)))
            return False, deleted, failed  # its snapshots are in use while it is registered
    for snapshot in snapshots:
        try:
            ec2.delete_snapshot(SnapshotId=snapshot)
            deleted.append(snapshot)
        except Exception as exc:  # noqa: BLE001
            if error_code(exc) == "InvalidSnapshot.NotFound":
                continue
            failed.append((snapshot, error_code(exc) or str(exc)))
    return deregistered, deleted, failed


def remove_saved_image(settings: Settings, image: SavedImage) -> Removal:
    """Deregister the image and delete its snapshots (callers ask the user first)."""
    used_by = boxes_using(settings, image)
    ec2 = client(settings, "ec2", image.region)
    deregistered, deleted, failed = _delete_image_and_snapshots(
        ec2, image.image_id, image.snapshot_ids
    )
    return Removal(image, deregistered, tuple(deleted), tuple(failed), used_by)


@dataclass(frozen=True)
class Created:
    image: SavedImage
    stopped_box: bool  # gpubox stopped the box for a consistent image; it stays stopped
    consistent: bool  # made from a stopped box (else: no reboot, files mid-write may be torn)


def create_saved_image(
    settings: Settings,
    region: str,
    box_name: str,
    image_name: str,
    *,
    stop_first: bool = False,
    on_progress: Progress | None = None,
    timeout: float = WAIT_SECONDS,
    poll: float = POLL_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Created:
    """Make an AMI of the box, wait until it is available, tag it and its snapshots.

    A running box is imaged without a reboot unless `stop_first`, which stops it first
    (and leaves it stopped: starting it again is the user's call, it costs money).
    Anything that goes wrong after the AMI exists removes it and its snapshots again.
    """
    from gpubox import inflight

    say = on_progress or (lambda _: None)
    check_image_name(image_name)
    if not inflight.nested():  # a move images the disk as one step of its own record
        inflight.begin(f"saving image '{image_name}' of '{box_name}'",
                       undo=f"gpubox image rm {image_name} --yes")  # fmt: skip
    ec2 = client(settings, "ec2", region)
    instances = find_instances(settings, region, box_name)
    if not instances:
        raise NotFound(
            f"no box called '{box_name}' in {region}",
            hint="`gpubox status` lists your boxes (an image is made from an AWS box)",
        )
    inst = max(instances, key=lambda i: str(i.get("LaunchTime", "")))
    with aws_errors(f"checking for an image called '{image_name}'"):
        clash = ec2.describe_images(
            Owners=["self"], Filters=[{"Name": f"tag:{IMAGE_TAG}", "Values": [image_name]}]
        )["Images"]
    resumed = [i for i in clash if i.get("State") == "pending"
               and tag_value(i, BOX_TAG) == box_name]  # fmt: skip
    if resumed:  # an interrupted run's image, still being made: finish the job
        say(f"image '{image_name}' ({resumed[0]['ImageId']}) from an earlier run is still "
            "being made; waiting for it")  # fmt: skip
        return _finish(ec2, region, resumed[0]["ImageId"], resumed[0].get("Tags", []), say,
                       (timeout, poll, sleep, clock), stopped_box=False,
                       consistent=inst["State"]["Name"] == "stopped")  # fmt: skip
    if clash:
        raise InvalidInput(
            f"an image called '{image_name}' already exists ({clash[0]['ImageId']} in {region})",
            hint=f"pick another name with --as, or remove it first: gpubox image rm {image_name}",
        )
    state = inst["State"]["Name"]
    stopped_box = False
    if state not in ("running", "stopped"):
        raise GpuboxError(
            f"box '{box_name}' is {state}; an image needs it running or stopped",
            hint="wait a moment and try again (`gpubox status` shows its state)",
        )
    if state == "running" and stop_first:
        say(f"stopping {box_name} so the image is consistent")
        with aws_errors(f"stopping {box_name}"):
            ec2.stop_instances(InstanceIds=[inst["InstanceId"]])
            ec2.get_waiter("instance_stopped").wait(
                InstanceIds=[inst["InstanceId"]], WaiterConfig={"Delay": 5, "MaxAttempts": 120}
            )
        stopped_box = True
        state = "stopped"
    owner = caller_identity(settings).get("Arn", "unknown")
    tags = [t for t in tags_for(box_name, owner, "image") if t["Key"] != "Name"]
    tags += [{"Key": IMAGE_TAG, "Value": image_name}, {"Key": "Name", "Value": image_name}]
    say(f"creating image '{image_name}' of {box_name} ({inst['InstanceId']})")
    inflight.step(f"creating image '{image_name}' (it may exist already)")
    with aws_errors(f"creating image '{image_name}'"):
        image_id = ec2.create_image(
            InstanceId=inst["InstanceId"],
            Name=f"gpubox-{image_name}",
            Description=f"gpubox saved image '{image_name}' of box '{box_name}'",
            NoReboot=True,  # never reboot a box under someone's work; stop_first is the clean way
            TagSpecifications=[{"ResourceType": "image", "Tags": tags}],
        )["ImageId"]
    return _finish(ec2, region, image_id, tags, say, (timeout, poll, sleep, clock),
                   stopped_box=stopped_box, consistent=state == "stopped")  # fmt: skip


def _finish(
    ec2: Any, region: str, image_id: str, tags: list[dict[str, str]], say: Progress,
    pacing: tuple[float, float, Callable[[float], None], Callable[[], float]],
    *, stopped_box: bool, consistent: bool,
) -> Created:
    """Wait for the image, tag its snapshots; anything going wrong (an interruption too)
    removes the unfinished image and its snapshots again."""
    from gpubox import inflight

    inflight.made("image", image_id, region, note="unfinished; removed if this is interrupted")
    inflight.step(f"waiting for image {image_id}")
    try:
        found = _wait_available(ec2, image_id, say, *pacing)
        snapshot_tags = [t for t in tags if t["Key"] != KIND_TAG]
        snapshot_tags.append({"Key": KIND_TAG, "Value": "snapshot"})
        snapshots = _saved_from(found, region).snapshot_ids
        if snapshots:  # tagged afterwards: TagSpecifications for snapshots is not portable
            with aws_errors("tagging the image's snapshots"):
                ec2.create_tags(Resources=list(snapshots), Tags=snapshot_tags)
    except BaseException:
        say(f"removing the unfinished image {image_id}")
        _delete_image_and_snapshots(ec2, image_id, ())
        inflight.gone("image", image_id)
        raise
    return Created(_saved_from(found, region), stopped_box, consistent=consistent)


def _wait_available(
    ec2: Any,
    image_id: str,
    say: Progress,
    timeout: float,
    poll: float,
    sleep: Callable[[float], None],
    clock: Callable[[], float],
) -> dict[str, Any]:
    started = clock()
    while True:
        with aws_errors(f"waiting for image {image_id}"):
            images = ec2.describe_images(ImageIds=[image_id])["Images"]
        found = images[0] if images else {"State": "pending"}
        state = found.get("State", "pending")
        if state == "available":
            say(f"image {image_id} is available")
            return found
        if state in ("failed", "invalid", "error", "deregistered"):
            reason = found.get("StateReason", {}).get("Message", "")
            raise GpuboxError(
                f"AWS could not make image {image_id}: {state} {reason}".strip(),
                hint="try again; if it fails again, stop the box first (--stop)",
            )
        waited = clock() - started
        if waited > timeout:
            raise GpuboxError(
                f"image {image_id} was still {state} after {int(waited)}s",
                hint="large disks take long; try again later with --stop",
            )
        say(f"image {image_id}: {state} ({int(waited)}s)")
        sleep(poll)
