"""Everything a box owns in AWS, read from AWS by tag: the one model the commands take.

A box is not an instance. It is node 0 (tag gpubox:box=NAME) and its further nodes
(gpubox:box=NAME-1 ..., each with gpubox:cluster=NAME and gpubox:node=RANK), its
security group and key pair gpubox-NAME, its placement group gpubox-NAME, the data
volumes attached to its nodes, and what a move or an image has half-made (an image
tagged with the box, still pending, or a move's NAME-move-... image). `scan` reads all
of it with one look at each kind of resource per region, regions in parallel, into a
`BoxResources`. `down`, the checks before `up --nodes`, `status`/`stop` of a box whose
node 0 is gone and the report printed on Ctrl-C take that set (cluster.py, cli/main.py);
`gc` counts a box's parts as used the same way (gc.py). A node is a part, never a box:
`node_of` says which box a node's name belongs to.

Prices come from the price snapshot (no network), so the set can be told while a
command is being interrupted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gpubox.providers.aws.network import (
    BOX_TAG,
    CLUSTER_TAG,
    NODE_TAG,
    resource_name,
    tag_value,
)
from gpubox.providers.aws.session import aws_errors, client

if TYPE_CHECKING:
    from gpubox.config import Settings
    from gpubox.state import State

# The public IPv4 address AWS bills while an instance runs (February 2024 on).
ADDRESS_PER_HOUR = 0.005
HOURS_PER_MONTH = 730.0
# Instance states that still hold a box's key pair, group and placement group.
HOLDING = ("pending", "running", "shutting-down", "stopping", "stopped")
BILLING = ("pending", "running")  # compute billed per hour (AWS stops at shutting-down)


@dataclass(frozen=True)
class Part:
    """One thing a box owns in AWS."""

    kind: str  # "instance", "security group", "key pair", "placement group", "volume", "image"
    id: str
    region: str
    state: str = ""
    name: str = ""  # an instance's own name (gpubox:box): NAME, NAME-1 ...
    rank: int | None = None  # an instance's node rank
    type: str = ""
    per_hour: float = 0.0  # what it bills per hour now (instances that run: compute + address)
    per_month: float = 0.0  # what it bills per month while it exists (disks, images)
    disk_gb: int = 0
    note: str = ""
    spot_request: str = ""
    launched: str = ""  # an instance's launch time, to tell two instances of one node apart
    cluster: str = ""  # an instance's gpubox:cluster tag (a box of several nodes)

    @property
    def holds(self) -> bool:
        """Still there as far as the box's shared parts go (a shutting-down instance too)."""
        return self.kind != "instance" or self.state in HOLDING

    def describe(self) -> str:
        where = f" ({self.region})" if self.region else ""
        if self.kind == "instance":
            what = (f"node {self.rank} '{self.name}'" if self.cluster else f"box '{self.name}'")
            what += f", {self.type}, {self.state}"
            if self.disk_gb:
                what += f", {self.disk_gb} GB disk"
            money = []
            if self.per_hour:
                money.append(f"${self.per_hour:.3f}/h")
            if self.per_month:
                money.append(f"${self.per_month:.2f}/month disk")
            cost = f": {' + '.join(money)}" if money else ""
            note = f" ({self.note})" if self.note else ""
            return f"instance {self.id}{where}{cost} - {what}{note}"
        cost = f": ${self.per_month:.2f}/month" if self.per_month else ""
        note = f" - {self.note}" if self.note else ""
        size = f" {self.disk_gb} GiB" if self.disk_gb and self.kind in ("volume", "image") else ""
        return f"{self.kind} {self.id}{size}{where}{cost}{note}"


@dataclass(frozen=True)
class BoxResources:
    """What the box `name` owns in AWS now, in the regions looked at."""

    name: str
    parts: tuple[Part, ...] = ()
    regions: tuple[str, ...] = ()
    failed: tuple[str, ...] = field(default=())  # regions that could not be asked

    def of_kind(self, kind: str) -> list[Part]:
        return [p for p in self.parts if p.kind == kind]

    @property
    def instances(self) -> list[Part]:
        """Every instance still holding the box (terminated ones are gone), by rank."""
        found = [p for p in self.of_kind("instance") if p.holds]
        return sorted(found, key=lambda p: (p.rank or 0, p.launched, p.id))

    @property
    def ranks(self) -> list[int]:
        return sorted({p.rank or 0 for p in self.instances})

    @property
    def nodes(self) -> dict[int, list[Part]]:
        out: dict[int, list[Part]] = {}
        for p in self.instances:
            out.setdefault(p.rank or 0, []).append(p)
        return out

    @property
    def ended(self) -> list[Part]:
        """Instances AWS shows as terminated: proof the box was there and is gone."""
        return [p for p in self.of_kind("instance") if not p.holds]

    @property
    def live(self) -> bool:
        return bool(self.instances)

    @property
    def exists(self) -> bool:
        """Anything of the box is left in AWS (terminated instances aside)."""
        return any(p.holds for p in self.parts)

    @property
    def per_hour(self) -> float:
        return sum(p.per_hour for p in self.parts if p.holds)

    @property
    def per_month(self) -> float:
        return sum(p.per_month for p in self.parts if p.holds)

    @property
    def clustered(self) -> bool:
        """A box of several nodes (its instances carry the cluster tags)."""
        return any(p.cluster for p in self.instances)

    def lines(self) -> list[str]:
        """One line per part that exists, then what it all costs."""
        shown = [p for p in self.parts if p.holds]
        out = [f"  {p.describe()}" for p in shown]
        if shown:
            money = []
            if self.per_hour:
                money.append(f"${self.per_hour:.2f}/h while it runs")
            if self.per_month:
                money.append(f"${self.per_month:.2f}/month while it exists")
            out.append("it costs " + " and ".join(money) if money
                       else "none of it bills per hour or per month")
        return out


def box_of(inst: dict[str, Any]) -> str | None:
    """The box an instance belongs to: its cluster (node 0's name), else its own name."""
    return tag_value(inst, CLUSTER_TAG) or tag_value(inst, BOX_TAG)


def rank_of(inst: dict[str, Any]) -> int:
    text = tag_value(inst, NODE_TAG) or "0"
    return int(text) if text.isdigit() else 0


def _price(type_name: str, region: str) -> float:
    """On-demand $/h from the price snapshot (a spot instance's: at most that)."""
    from gpubox.providers.aws.prices import snapshot_per_hour

    return snapshot_per_hour(type_name, region) or 0.0


def _disk_rate(region: str, kind: str = "gp3") -> float:
    from gpubox.providers.aws.prices import storage_price_per_gb_month

    return storage_price_per_gb_month(region, kind)


def _instance_part(inst: dict[str, Any], region: str, sizes: dict[str, int], name: str) -> Part:
    state = inst["State"]["Name"]
    kind = inst.get("InstanceType", "")
    disk = sizes.get(inst["InstanceId"], 0)
    own = tag_value(inst, BOX_TAG) or inst["InstanceId"]
    per_hour = 0.0
    if state in BILLING:
        per_hour = _price(kind, region) + ADDRESS_PER_HOUR
    per_month = disk * _disk_rate(region) if state in HOLDING and state != "shutting-down" else 0.0
    note = "spot: at most the on-demand price" if inst.get("InstanceLifecycle") == "spot" else ""
    image = inst.get("ImageId", "")
    return Part("instance", inst["InstanceId"], region, state, own, rank_of(inst), kind,
                round(per_hour, 4), round(per_month, 2), disk, note,
                inst.get("SpotInstanceRequestId", ""),
                str(inst.get("LaunchTime", "")) + "|" + image,
                tag_value(inst, CLUSTER_TAG) or "")  # fmt: skip


def _scan_region(settings: Settings, region: str, name: str) -> list[Part]:
    from gpubox.providers.aws.images import IMAGE_TAG
    from gpubox.providers.aws.instances import root_volume_sizes

    ec2 = client(settings, "ec2", region, purpose="read")
    parts: list[Part] = []
    mine = [{"Name": f"tag:{BOX_TAG}", "Values": [name]}]
    with aws_errors(f"looking at what '{name}' owns in {region}"):
        pages = ec2.get_paginator("describe_instances").paginate(
            Filters=[{"Name": "tag-key", "Values": [BOX_TAG]}])
        found = [i for page in pages for r in page["Reservations"] for i in r["Instances"]
                 if box_of(i) == name]  # fmt: skip
        held = [i for i in found if i["State"]["Name"] != "terminated"]
        sizes = root_volume_sizes(settings, region, held) if held else {}
        parts += [_instance_part(i, region, sizes, name) for i in found]
        for group in ec2.describe_security_groups(Filters=mine)["SecurityGroups"]:
            parts.append(Part("security group", group["GroupId"], region,
                              note=group.get("GroupName", "")))
        for key in ec2.describe_key_pairs(Filters=mine)["KeyPairs"]:
            parts.append(Part("key pair", key["KeyName"], region))
        parts += _placement_groups(ec2, name, region)
        for image in ec2.describe_images(Owners=["self"], Filters=mine)["Images"]:
            image_name = tag_value(image, IMAGE_TAG) or ""
            moving = image_name.startswith(f"{name}-move-")
            if image.get("State") != "pending" and not moving:
                continue  # a saved image outlives its box (`gpubox images` lists it)
            size = sum(m.get("Ebs", {}).get("VolumeSize", 0)
                       for m in image.get("BlockDeviceMappings", []))  # fmt: skip
            what = "a move's copy of the disk" if moving else f"image '{image_name}' being made"
            parts.append(Part("image", image["ImageId"], region, image.get("State", ""),
                              disk_gb=size, per_month=round(size * _disk_rate(region, "snapshot"), 2),
                              note=what))  # fmt: skip
    parts += _volumes(settings, region, [p for p in parts if p.kind == "instance" and p.holds])
    return parts


def _placement_groups(ec2: Any, name: str, region: str) -> list[Part]:
    """The box's placement group gpubox-NAME, if AWS has it (found by name: a filter on
    tags is not answered everywhere)."""
    import botocore.exceptions
    from botocore.parsers import ResponseParserError

    try:
        found = ec2.describe_placement_groups(
            Filters=[{"Name": "group-name", "Values": [resource_name(name)]}])["PlacementGroups"]
    # An endpoint without placement groups (moto: NotImplementedError in-process, an HTML
    # 500 from its server) holds none of gpubox's either.
    except (botocore.exceptions.ClientError, ResponseParserError, NotImplementedError):
        return []  # an account or endpoint without placement groups has none of the box's
    return [Part("placement group", g["GroupName"], region, g.get("State", ""))
            for g in found if tag_value(g, BOX_TAG) in (None, name)]


def _volumes(settings: Settings, region: str, held: list[Part]) -> list[Part]:
    """The data volumes attached to the box's instances (volumes.py's, asked for these
    instances' volumes alone, not the region's)."""
    if not held:
        return []
    from gpubox.providers.aws import volumes

    ids = {p.id: p for p in held}
    out = []
    for vol in volumes.volumes_of_box(settings, region, list(ids)):
        if vol.instance_id in ids:
            out.append(Part("volume", vol.id, region, vol.state, name=vol.name,
                            disk_gb=vol.size_gb, per_month=vol.per_month,
                            note=f"data volume '{vol.name}' on '{ids[vol.instance_id].name}'; "
                            "`down` keeps it"))  # fmt: skip
    return out


def regions_to_look(settings: Settings, state: State | None, wide: bool = True) -> list[str]:
    from gpubox.providers.aws import inventory

    if not wide:
        return inventory.known_regions(settings, state)
    return inventory.search_regions(settings, state)


def scan(settings: Settings, state: State | None, name: str,
         regions: Iterable[str] | None = None, remember: bool = True) -> BoxResources:
    """What the box `name` owns, in `regions` (default: every region gpubox searches).
    Regions are asked in parallel; one that cannot be asked is named in `failed`, and
    when none can, the error is raised (an empty answer would not be true)."""
    from gpubox.providers.aws.inventory import each_region

    wanted = list(regions) if regions is not None else regions_to_look(settings, state)
    failed: list[str] = []
    answers = each_region(wanted, lambda r: _scan_region(settings, r, name),
                          lambda r, _exc: failed.append(r))
    parts = _told_apart(tuple(p for r in wanted for p in answers.get(r, [])))
    if state is not None and parts and remember:
        from gpubox.providers.aws.session import remember_region

        for region in {p.region for p in parts if p.holds}:
            remember_region(state, region)
    return BoxResources(name, parts, tuple(wanted), tuple(failed))


def _told_apart(parts: tuple[Part, ...]) -> tuple[Part, ...]:
    """Two live instances of one node (a move: the new one is launched before the old one
    is renamed NAME-old) are told apart: the older is the box's, the newer the move's."""
    from dataclasses import replace

    held: dict[tuple[str, int], list[Part]] = {}
    for p in parts:
        if p.kind == "instance" and p.holds:
            held.setdefault((p.name, p.rank or 0), []).append(p)
    notes: dict[str, str] = {}
    for group in held.values():
        if len(group) < 2:
            continue
        group.sort(key=lambda p: (p.launched, p.id))
        notes[group[0].id] = "the box's instance (the oldest; a move copies it)"
        for p in group[1:]:
            notes[p.id] = "a second instance: a move's new one (or a racing `up`'s)"
    return tuple(replace(p, note=notes[p.id]) if p.id in notes else p for p in parts)


def live_named(settings: Settings, state: State | None, names: list[str],
               regions: Iterable[str] | None = None) -> dict[str, list[dict[str, Any]]]:
    """{name: its live instances (raw)} for instances tagged gpubox:box with one of the
    names: one DescribeInstances per region."""
    from gpubox.providers.aws.inventory import each_region
    from gpubox.providers.aws.network import LIVE_STATES

    wanted = list(regions) if regions is not None else regions_to_look(settings, state)

    def look(region: str) -> list[dict[str, Any]]:
        ec2 = client(settings, "ec2", region, purpose="read")
        with aws_errors(f"looking for {', '.join(names)} in {region}"):
            pages = ec2.get_paginator("describe_instances").paginate(Filters=[
                {"Name": f"tag:{BOX_TAG}", "Values": names},
                {"Name": "instance-state-name", "Values": LIVE_STATES}])  # fmt: skip
            return [i for p in pages for r in p["Reservations"] for i in r["Instances"]]

    out: dict[str, list[dict[str, Any]]] = {}
    for found in each_region(wanted, look).values():
        for inst in found:
            out.setdefault(tag_value(inst, BOX_TAG) or "", []).append(inst)
    return out


@dataclass(frozen=True)
class NodeOf:
    box: str
    rank: int
    nodes: int  # how many nodes the box has now


def node_of(settings: Settings, state: State | None, name: str,
            regions: Iterable[str] | None = None) -> NodeOf | None:
    """When `name` is node 1, 2 ... of another box (NAME-1 of NAME): that box; else None.
    Asked of AWS (the instances tagged with the name), so it holds from a new HOME."""
    wanted = list(regions) if regions is not None else regions_to_look(settings, state)
    for inst in live_named(settings, state, [name], wanted).get(name, []):
        cluster = tag_value(inst, CLUSTER_TAG)
        if cluster and cluster != name:
            whole = scan(settings, state, cluster, wanted)
            return NodeOf(cluster, rank_of(inst), max(len(whole.ranks), 1))
    return None


# acting on the whole set -------------------------------------------------------------


def terminate_instances(settings: Settings, res: BoxResources, say: Any,
                        delay: float = 5.0) -> list[str]:
    """Terminate every instance of the box (every node, every region) at once, cancel
    their spot requests, and wait until AWS says each is terminated. The ids."""
    from gpubox import inflight
    from gpubox.providers.aws.instances import wait_for

    done: list[str] = []
    for region in sorted({p.region for p in res.instances}):
        here = [p for p in res.instances if p.region == region]
        ec2 = client(settings, "ec2", region)
        requests = [p.spot_request for p in here if p.spot_request]
        if requests:  # a persistent request would launch a replacement
            with aws_errors("cancelling spot requests"):
                ec2.cancel_spot_instance_requests(SpotInstanceRequestIds=requests)
        ids = [p.id for p in here if p.state != "shutting-down"]
        if ids:
            say(f"terminating {', '.join(ids)} ({region})")
            with aws_errors(f"terminating {', '.join(ids)}"):
                ec2.terminate_instances(InstanceIds=ids)
        for part in here:
            say(f"waiting for {part.id} ('{part.name}') to be terminated")
            wait_for(settings, region, part.id, "terminated", delay)
            inflight.gone("instance", part.id)
            done.append(part.id)
    return done


def remove_shared(settings: Settings, res: BoxResources, say: Any) -> list[str]:
    """The box's security groups, key pairs and placement groups, once no instance of the
    box holds them (a box with a live node keeps them all). What was removed."""
    from gpubox.providers.aws import keypairs, network, placement

    removed: list[str] = []
    for part in res.parts:
        if part.kind == "security group":
            if network.delete_security_group_if_unused(settings, part.region, part.id):
                removed.append(f"security group {part.id} ({part.region})")
        elif part.kind == "key pair":
            if keypairs.delete_key_pair_if_unused(settings, part.region, part.id):
                removed.append(f"key pair {part.id} ({part.region})")
    for part in res.of_kind("placement group"):
        if placement.delete_placement_group_if_unused(settings, part.region, res.name):
            removed.append(f"placement group {part.id} ({part.region})")
    for item in removed:
        say(f"removed {item}")
    return removed


# the report told when a command is interrupted ----------------------------------------


def report_lines(settings: Settings, name: str, timeout: float = 10.0) -> list[str] | None:
    """What the box `name` owns in AWS right now, one line per part with what it costs,
    for the message of an interrupted command; None when AWS cannot be asked in time."""
    import threading

    answer: list[BoxResources] = []

    def ask() -> None:
        from gpubox.state import State

        state = State(settings.state_path)
        try:
            answer.append(scan(settings, state, name, remember=False))
        except Exception:  # noqa: BLE001 - the report falls back to what the process saw
            pass
        finally:
            state.close()

    thread = threading.Thread(target=ask, daemon=True)
    thread.start()
    thread.join(timeout)
    if not answer:
        return None
    res = answer[0]
    if not res.exists:
        return [f"nothing of '{name}' exists in AWS now (looked in {', '.join(res.regions)})"]
    return [f"what '{name}' owns in AWS now:", *res.lines()]
