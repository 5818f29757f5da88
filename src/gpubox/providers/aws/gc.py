"""Find and remove what gpubox left billing or cluttering in AWS that no box owns any more.

Only resources carrying gpubox's `gpubox:box` tag are ever looked at; untagged ones are
not gpubox's to judge. Saved images are kept (they are meant to outlive their box) and
listed with what they cost; `gpubox image rm` removes them. Removal is the caller's
decision after showing the plan: `find_garbage` changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gpubox.providers.aws.images import IMAGE_TAG
from gpubox.providers.aws.network import BOX_TAG, CLUSTER_TAG, LIVE_STATES, VOLUME_TAG, tag_value
from gpubox.providers.aws.session import aws_errors, client, error_code
from gpubox.providers.base import Progress

HOURS_PER_MONTH = 730.0
# Every public IPv4 address, attached or not, is billed since February 2024.
ELASTIC_IP_PER_HOUR = 0.005
TAGGED = [{"Name": "tag-key", "Values": [BOX_TAG]}]
# Removal order: what holds others first (an instance holds its group, key, volumes).
ORDER = ("instance", "elastic-ip", "image", "snapshot", "volume", "placement-group",
         "security-group", "key-pair")



@dataclass(frozen=True)
class Garbage:
    kind: str  # one of ORDER
    id: str
    region: str
    box: str | None
    why: str
    per_month: float  # USD a month it keeps costing
    size_gb: int | None = None


@dataclass(frozen=True)
class GcPlan:
    regions: tuple[str, ...]
    garbage: tuple[Garbage, ...]
    kept_images: tuple[Garbage, ...]  # saved images, shown with their cost, never removed

    @property
    def per_month(self) -> float:
        return sum(g.per_month for g in self.garbage)


@dataclass(frozen=True)
class GcResult:
    removed: tuple[Garbage, ...]
    failed: tuple[tuple[Garbage, str], ...]



def _storage_price(region: str, kind: str) -> float:
    from gpubox.providers.aws import catalog

    return catalog.storage_price_per_gb_month(region, kind)


def _instance_price(settings: Any, type_name: str, region: str) -> float:
    from gpubox.providers.aws import catalog

    price = catalog.on_demand_price(settings, type_name, region)
    return price.value if price else 0.0


def find_garbage(
    settings: Any,
    regions: Iterable[str],
    keep_boxes: Mapping[str, str | None] | None = None,
    box_regions: Mapping[str, str | None] | None = None,
    searched: Iterable[str] = (),
) -> GcPlan:
    """What no box owns any more, region by region; changes nothing.

    A box owns what carries its name in a region where it has a live instance.
    `keep_boxes` ({name: instance id or None}) are boxes the caller knows about (the local
    state, e.g. an `up` still making its key and group): they own their resources too,
    and where a name has several live instances, the one with that id is the box.
    `box_regions` ({name: region}) limits that to the box's own region, so what a box
    left in another region (an abandoned launch attempt) is still found. Regions are
    looked at in parallel; `searched` names every region asked (for the report) when
    `regions` are only those `inventory.tagged_regions` found holding something.
    """
    keep = dict(keep_boxes or {})
    regions = tuple(regions)
    where = dict(box_regions or {})

    def scan(region: str) -> tuple[list[Garbage], list[Garbage]]:
        here = {n: i for n, i in keep.items() if where.get(n) in (None, region)}
        with aws_errors(f"looking for leftovers in {region}"):
            return _scan_region(settings, region, here)

    from gpubox.providers.aws.inventory import each_region

    failures: list[Exception] = []
    answers = each_region(regions, scan, lambda _, exc: failures.append(exc))
    if failures:  # a region that could not be looked at: say so, never "nothing left"
        raise failures[0]
    garbage = [g for r in regions for g in answers[r][0]]
    kept = [g for r in regions for g in answers[r][1]]
    all_searched = tuple(dict.fromkeys([*searched, *regions]))
    return GcPlan(all_searched, tuple(garbage), tuple(kept))


def _scan_region(
    settings: Any, region: str, keep: Mapping[str, str | None]
) -> tuple[list[Garbage], list[Garbage]]:
    ec2 = client(settings, "ec2", region)
    out: list[Garbage] = []
    instances = [
        i
        for page in ec2.get_paginator("describe_instances").paginate(
            Filters=[*TAGGED, {"Name": "instance-state-name", "Values": LIVE_STATES}]
        )
        for r in page["Reservations"]
        for i in r["Instances"]
    ]
    by_name: dict[str, list[dict[str, Any]]] = {}
    for inst in instances:
        by_name.setdefault(tag_value(inst, BOX_TAG) or "", []).append(inst)
    # A box owns what carries its name while any of its nodes lives: node 1.. carry the
    # box's name (node 0's) in their cluster tag, and share its group, key and placement.
    owners = set(by_name) | set(keep)
    owners |= {c for i in instances if (c := tag_value(i, CLUSTER_TAG))}
    for name, group in by_name.items():
        wanted = keep.get(name)
        if len(group) < 2 or not wanted or wanted not in {i["InstanceId"] for i in group}:
            continue  # one instance is the box; with several and no record, keep them all
        for inst in group:
            if inst["InstanceId"] != wanted:
                price = _instance_price(settings, inst["InstanceType"], region)
                running = inst["State"]["Name"] == "running"
                out.append(Garbage("instance", inst["InstanceId"], region, name,
                                   f"a second instance for box '{name}' (the box is {wanted})",
                                   price * HOURS_PER_MONTH if running else 0.0))  # fmt: skip

    for vol in ec2.describe_volumes(Filters=[*TAGGED, {"Name": "status", "Values": ["available"]}])[
        "Volumes"
    ]:
        if tag_value(vol, VOLUME_TAG):
            continue  # a named data volume outlives its boxes: `gpubox volumes` lists it
        per_gb = _storage_price(region, vol.get("VolumeType", "gp3"))
        out.append(Garbage("volume", vol["VolumeId"], region, tag_value(vol, BOX_TAG),
                           "not attached to any instance", vol["Size"] * per_gb,
                           vol["Size"]))  # fmt: skip

    snap_price = _storage_price(region, "snapshot")
    saved: list[Garbage] = []
    in_use: set[str] = set()  # snapshots behind an image that stays
    doomed: dict[str, str] = {}  # snapshot -> the unfinished image it goes with
    for image in ec2.describe_images(Owners=["self"])["Images"]:
        snapshots = [m["Ebs"]["SnapshotId"] for m in image.get("BlockDeviceMappings", [])
                     if m.get("Ebs", {}).get("SnapshotId")]  # fmt: skip
        box = tag_value(image, BOX_TAG)
        name = tag_value(image, IMAGE_TAG)
        if box is None or (name and image.get("State") != "failed"):
            in_use.update(snapshots)  # not gpubox's, or a saved image: kept
        size = sum(m["Ebs"].get("VolumeSize", 0) for m in image.get("BlockDeviceMappings", [])
                   if "Ebs" in m)  # fmt: skip
        if box is None:
            continue
        if name and image.get("State") != "failed":
            saved.append(Garbage("image", image["ImageId"], region, box, f"saved image '{name}'",
                                 size * snap_price, size))  # fmt: skip
            continue
        why = f"image {image.get('State')}" if name else "an image gpubox did not finish"
        out.append(Garbage("image", image["ImageId"], region, box, why, size * snap_price, size))
        doomed.update((snap, image["ImageId"]) for snap in snapshots)

    snaps = ec2.describe_snapshots(OwnerIds=["self"], Filters=TAGGED)["Snapshots"]
    missing = sorted(set(doomed) - {s["SnapshotId"] for s in snaps})
    if missing:  # an unfinished image's snapshots may carry no tags
        snaps += ec2.describe_snapshots(SnapshotIds=missing)["Snapshots"]
    for snap in snaps:
        if snap["SnapshotId"] in in_use:
            continue
        size = snap.get("VolumeSize", 0)
        image_id = doomed.get(snap["SnapshotId"])
        why = f"belongs to {image_id}, removed too" if image_id else "no registered image uses it"
        out.append(Garbage("snapshot", snap["SnapshotId"], region, tag_value(snap, BOX_TAG), why,
                           size * snap_price, size))  # fmt: skip

    for sg in ec2.describe_security_groups(Filters=TAGGED)["SecurityGroups"]:
        box = tag_value(sg, BOX_TAG)
        if box not in owners:
            out.append(Garbage("security-group", sg["GroupId"], region, box,
                               f"box '{box}' no longer exists", 0.0))  # fmt: skip

    for key in ec2.describe_key_pairs(Filters=TAGGED)["KeyPairs"]:
        box = tag_value(key, BOX_TAG)
        if box not in owners:
            out.append(Garbage("key-pair", key["KeyName"], region, box,
                               f"box '{box}' no longer exists", 0.0))  # fmt: skip

    out += _placement_leftovers(ec2, region, owners)

    for addr in ec2.describe_addresses(Filters=TAGGED)["Addresses"]:
        box = tag_value(addr, BOX_TAG)
        if box not in owners or not addr.get("AssociationId"):
            why = "not attached to a box" if box in owners else f"box '{box}' no longer exists"
            out.append(Garbage("elastic-ip", addr["AllocationId"], region, box, why,
                               ELASTIC_IP_PER_HOUR * HOURS_PER_MONTH))  # fmt: skip
    return out, saved


def _placement_leftovers(ec2: Any, region: str, owners: set[str | None]) -> list[Garbage]:
    """Placement groups gpubox made (tagged) whose box has no live node. Read without a
    tag filter: not every endpoint filters placement groups by tag."""
    import botocore.exceptions
    from botocore.parsers import ResponseParserError

    try:
        groups = ec2.describe_placement_groups()["PlacementGroups"]
    # An endpoint without placement groups (moto: NotImplementedError in-process, an HTML
    # 500 from its server) holds none of gpubox's either.
    except (botocore.exceptions.ClientError, ResponseParserError, NotImplementedError):
        return []  # no placement groups to be had here: none of gpubox's either
    out = []
    for group in groups:
        box = tag_value(group, BOX_TAG)
        if box is not None and box not in owners:
            out.append(Garbage("placement-group", group["GroupName"], region, box,
                               f"box '{box}' no longer exists", 0.0))  # fmt: skip
    return out


def collect(settings: Any, plan: GcPlan, on_progress: Progress | None = None) -> GcResult:
    """Remove everything in the plan (the caller has the user's yes); say what failed and why."""
    say = on_progress or (lambda _: None)
    removed: list[Garbage] = []
    failed: list[tuple[Garbage, str]] = []
    items = sorted(plan.garbage, key=lambda g: (ORDER.index(g.kind), g.region, g.id))
    for kind in ORDER:
        batch = [g for g in items if g.kind == kind]
        if kind == "instance" and batch:
            _terminate(settings, batch, say, removed, failed)
            continue
        for item in batch:
            say(f"removing {item.kind} {item.id} ({item.region})")
            try:
                _remove_one(client(settings, "ec2", item.region), item)
                removed.append(item)
                if item.kind == "key-pair" and item.box:
                    _forget_key_file(settings, plan, item.box, say)
            except Exception as exc:  # noqa: BLE001 - every failure is reported, the rest go on
                code = error_code(exc)
                if code.endswith("NotFound"):
                    removed.append(item)  # already gone
                else:
                    failed.append((item, code or str(exc)))
    return GcResult(tuple(removed), tuple(failed))


def _forget_key_file(settings: Any, plan: GcPlan, box: str, say: Progress) -> None:
    """The local private key of a removed key pair goes too, unless a live box of that
    name (in any region looked at) still needs it."""
    from gpubox.providers.aws.instances import find_instances
    from gpubox.providers.aws.keypairs import key_path, remove_key_file
    from gpubox.providers.aws.network import resource_name
    from gpubox.providers.aws.session import used_regions
    from gpubox.state import State

    path = key_path(settings, box)
    if not path.exists():
        return
    state = State(settings.state_path)
    try:
        regions = sorted(set(plan.regions) | set(used_regions(state)))
    finally:
        state.close()
    # The same key file serves the box's key pair in every region: keep it while any
    # region gpubox knows has a live box of that name, or still has its key pair.
    for region in regions:
        pairs = client(settings, "ec2", region).describe_key_pairs(
            Filters=[{"Name": "key-name", "Values": [resource_name(box)]}]
        )["KeyPairs"]
        if find_instances(settings, region, box) or pairs:
            return
    remove_key_file(path)
    say(f"removed the key file {path}")


def _terminate(settings: Any, batch: list[Garbage], say: Progress, removed: list, failed: list):
    for region in sorted({g.region for g in batch}):
        ids = [g.id for g in batch if g.region == region]
        say(f"terminating {', '.join(ids)} ({region})")
        ec2 = client(settings, "ec2", region)
        try:
            ec2.terminate_instances(InstanceIds=ids)
            ec2.get_waiter("instance_terminated").wait(
                InstanceIds=ids, WaiterConfig={"Delay": 5, "MaxAttempts": 120}
            )
            removed.extend(g for g in batch if g.region == region)
        except Exception as exc:  # noqa: BLE001
            failed.extend((g, error_code(exc) or str(exc)) for g in batch if g.region == region)


def _remove_one(ec2: Any, item: Garbage) -> None:
    if item.kind == "elastic-ip":
        ec2.release_address(AllocationId=item.id)
    elif item.kind == "image":
        ec2.deregister_image(ImageId=item.id)
    elif item.kind == "snapshot":
        ec2.delete_snapshot(SnapshotId=item.id)
    elif item.kind == "volume":
        ec2.delete_volume(VolumeId=item.id)
    elif item.kind == "security-group":
        ec2.delete_security_group(GroupId=item.id)
    elif item.kind == "key-pair":
        ec2.delete_key_pair(KeyName=item.id)
    elif item.kind == "placement-group":
        ec2.delete_placement_group(GroupName=item.id)
