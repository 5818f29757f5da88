"""Cost in plain sight: what each box costs now, has cost so far, and costs while stopped.

Pure arithmetic: prices, run history and the clock come in (the clock as `now`), so
tests fix all three. Compute is priced per second of each run (State.runs, plus the
instance's launch time when gpubox missed a start); disks and saved images are priced
per GB-month, prorated over a 730-hour month as AWS does.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gpubox.providers.base import Box, BoxState

HOURS_PER_MONTH = 730.0  # AWS's month for GB-month prorating


@dataclass(frozen=True)
class Rate:
    """A price with where it came from and when: '$0.526/h, aws-pricing-api, 2026-11-01'."""

    value: float
    unit: str  # "h" or "GB-month"
    source: str
    date: str

    def label(self) -> str:
        return f"${self.value:g}/{self.unit} ({self.source}, {self.date})"


@dataclass(frozen=True)
class BoxCost:
    name: str
    state: str
    per_hour: float | None  # compute, while it runs (None: price unknown)
    storage_per_month: float  # its disk, running or stopped
    spent_compute: float  # since gpubox made it
    spent_storage: float
    month_compute: float  # since the 1st of this month (UTC)
    month_storage: float
    hourly_rate: Rate | None = None
    storage_rate: Rate | None = None
    hours_run: float = 0.0
    # The public IPv4 address AWS bills while the box runs (in spent/month_compute too).
    address_per_hour: float = 0.0
    # History before this instant is not known here (local state lost or new laptop);
    # the figures count from it. None: complete since the box was made.
    complete_from: float | None = None
    # A box of several machines: how many, and each node's own cost (the figures above
    # are their sums; hours_run is node-hours).
    nodes: int = 1
    node_costs: tuple[BoxCost, ...] = ()

    @property
    def spent(self) -> float:
        return self.spent_compute + self.spent_storage

    @property
    def billing_now(self) -> float:
        """$/h it bills right now: compute and address of each node that runs."""
        return sum((n.per_hour or 0.0) + n.address_per_hour
                   for n in (self.node_costs or (self,)) if n.state == BoxState.RUNNING.value)

    @property
    def month(self) -> float:
        return self.month_compute + self.month_storage

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["hourly_rate"] = self.hourly_rate.__dict__ if self.hourly_rate else None
        data["storage_rate"] = self.storage_rate.__dict__ if self.storage_rate else None
        data.update(spent=round(self.spent, 4), month=round(self.month, 4))
        data["node_costs"] = [n.to_dict() for n in self.node_costs]
        return data


@dataclass(frozen=True)
class ImageCost:
    name: str
    image_id: str
    region: str
    size_gb: int
    per_month: float
    spent: float
    month: float
    rate: Rate | None = None

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["rate"] = self.rate.__dict__ if self.rate else None
        return data


@dataclass(frozen=True)
class CostReport:
    now: float
    boxes: tuple[BoxCost, ...]
    images: tuple[ImageCost, ...]
    volumes: tuple[Any, ...] = ()  # data volumes (aws/volumes.Volume), each with per_month

    @property
    def volumes_per_month(self) -> float:
        return sum(v.per_month for v in self.volumes)

    @property
    def running_per_hour(self) -> float:
        return sum(b.billing_now for b in self.boxes)

    @property
    def complete_from(self) -> float | None:
        """The latest instant before which some box's history is unknown, if any."""
        known = [b.complete_from for b in self.boxes if b.complete_from is not None]
        return max(known) if known else None

    @property
    def kept_per_month(self) -> float:
        """What stays billed with every box stopped: disks and saved images."""
        return (
            sum(b.storage_per_month for b in self.boxes)
            + sum(i.per_month for i in self.images)
            + self.volumes_per_month
        )

    @property
    def month_so_far(self) -> float:
        return sum(b.month for b in self.boxes) + sum(i.month for i in self.images)

    @property
    def spent(self) -> float:
        return sum(b.spent for b in self.boxes) + sum(i.spent for i in self.images)

    def to_dict(self) -> dict[str, Any]:
        return {
            "now": self.now,
            "running_per_hour": round(self.running_per_hour, 4),
            "complete_from": self.complete_from,
            "kept_per_month": round(self.kept_per_month, 2),
            "month_so_far": round(self.month_so_far, 2),
            "spent": round(self.spent, 2),
            "boxes": [b.to_dict() for b in self.boxes],
            "images": [i.to_dict() for i in self.images],
            "volumes": [v.to_dict() for v in self.volumes],
            "volumes_per_month": round(self.volumes_per_month, 2),
        }


def month_start(now: float) -> float:
    """The first instant of `now`'s calendar month, UTC (AWS bills by UTC months)."""
    day = dt.datetime.fromtimestamp(now, dt.UTC)
    return day.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp()


def run_intervals(
    runs: Iterable[Mapping[str, Any]], box: Box | None, now: float
) -> list[tuple[float, float, float | None]]:
    """(start, end, $/h) of each run, overlaps merged; an open run ends now.

    A running box whose launch time no run covers (gpubox did not see it start) gets a
    run from its launch time, priced at the box's price; so does a stopped box's last run,
    from its last launch to EC2's stop time, when the local history lacks it. An open run
    ends at EC2's stop time when the box is stopped (it stopped itself, or was stopped
    in the console), never at `now`.
    """
    last = _ec2_last_run(box)
    stopped_at = None
    if box is not None and box.state in (BoxState.STOPPED, BoxState.TERMINATED):
        stopped_at = float(box.get("stopped_at") or 0.0) or None
    spans: list[tuple[float, float, float | None]] = []
    for run in runs:
        start = float(run["started_at"])
        if run.get("stopped_at") is not None:
            end = float(run["stopped_at"])
        else:
            end = stopped_at if stopped_at is not None and stopped_at >= start else now
        spans.append((start, min(end, now), run.get("price_per_hour")))
    if last is not None:
        launched, ended = last
        if not any(s <= launched + 60 and launched <= e for s, e, _ in spans):
            spans.append((launched, min(ended, now), box.price_per_hour if box else None))
    spans.sort()
    merged: list[tuple[float, float, float | None]] = []
    for start, end, price in spans:
        if end <= start:
            continue
        if merged and start < merged[-1][1]:
            last_end = merged[-1][1]
            if end > last_end:  # only the part not already counted
                merged.append((last_end, end, price))
            continue
        merged.append((start, end, price))
    return merged


def _ec2_last_run(box: Box | None) -> tuple[float, float] | None:
    """(start, end) of the box's current or last run as EC2 tells it: its launch time to
    now (running; end = +inf) or to its stop time (StateTransitionReason), else None."""
    if box is None:
        return None
    if box.state is BoxState.RUNNING and box.launched_at:
        return float(box.launched_at), float("inf")
    launched, stopped = box.get("launch_time"), box.get("stopped_at")
    if box.state is BoxState.STOPPED and launched and stopped and float(stopped) > float(launched):
        return float(launched), float(stopped)
    return None


def complete_from(
    spans: Sequence[tuple[float, float, float | None]], box: Box, *, slack: float = 600.0
) -> float | None:
    """When the known history starts, if the box is older than that (lost local state:
    runs before it are unknown); None when the history goes back to the box's making."""
    made = box.created_at
    first = spans[0][0] if spans else None
    if made is None:
        return None
    if first is None:
        return None if box.state is not BoxState.RUNNING else made
    return first if first > made + slack else None


def compute_spend(
    spans: Sequence[tuple[float, float, float | None]],
    fallback_price: float | None,
    since: float | None = None,
) -> tuple[float, float]:
    """($ spent, hours run) over the spans, clipped to `since`; a span's own price first."""
    dollars = hours = 0.0
    for start, end, price in spans:
        if since is not None:
            start = max(start, since)
        if end <= start:
            continue
        span_hours = (end - start) / 3600.0
        hours += span_hours
        dollars += span_hours * (price if price is not None else (fallback_price or 0.0))
    return dollars, hours


def storage_spend(gb: float, per_gb_month: float, since: float | None, now: float) -> float:
    if since is None or since >= now:
        return 0.0
    return gb * per_gb_month * (now - since) / 3600.0 / HOURS_PER_MONTH


def box_cost(
    box: Box,
    runs: Sequence[Mapping[str, Any]],
    now: float,
    *,
    hourly: Rate | None,
    storage: Rate | None,
    address_per_hour: float = 0.0,
) -> BoxCost:
    """The cost of one box: $/h now, $/month kept, spent since made, and this month.

    address_per_hour: what its public IPv4 address costs while it runs (AWS: $0.005/h).
    """
    spans = run_intervals(runs, box, now)
    price = hourly.value if hourly else box.price_per_hour
    spent_compute, hours = compute_spend(spans, price)
    month = month_start(now)
    month_compute, month_hours = compute_spend(spans, price, since=month)
    spent_compute += hours * address_per_hour
    month_compute += month_hours * address_per_hour
    gb = float(box.disk_gb or 0)
    per_gb = storage.value if storage else 0.0
    born = box.created_at or (spans[0][0] if spans else None)
    return BoxCost(
        name=box.name,
        state=box.state.value,
        per_hour=price,
        storage_per_month=round(gb * per_gb, 4),
        spent_compute=spent_compute,
        spent_storage=storage_spend(gb, per_gb, born, now),
        month_compute=month_compute,
        month_storage=storage_spend(gb, per_gb, max(born, month) if born else None, now),
        hourly_rate=hourly,
        storage_rate=storage,
        hours_run=hours,
        address_per_hour=address_per_hour,
        complete_from=complete_from(spans, box),
    )


def gone_box_cost(name: str, runs: Sequence[Mapping[str, Any]], now: float) -> BoxCost:
    """A box that was `down`ed: what its runs cost, kept in the totals (no disk now)."""
    spans = run_intervals(runs, None, now)
    spent, hours = compute_spend(spans, None)
    month, _ = compute_spend(spans, None, since=month_start(now))
    return BoxCost(name=name, state=BoxState.TERMINATED.value, per_hour=None,
                   storage_per_month=0.0, spent_compute=spent, spent_storage=0.0,
                   month_compute=month, month_storage=0.0, hours_run=hours)  # fmt: skip


def image_cost(
    name: str,
    image_id: str,
    region: str,
    size_gb: int,
    created_at: float | None,
    now: float,
    rate: Rate | None,
) -> ImageCost:
    """A saved image's snapshots, priced at the full volume size (an upper bound: AWS bills
    the blocks actually stored, which for a fresh image is what the disk holds)."""
    per_gb = rate.value if rate else 0.0
    month = month_start(now)
    return ImageCost(
        name=name,
        image_id=image_id,
        region=region,
        size_gb=size_gb,
        per_month=round(size_gb * per_gb, 4),
        spent=storage_spend(size_gb, per_gb, created_at, now),
        month=storage_spend(size_gb, per_gb, max(created_at, month) if created_at else None, now),
        rate=rate,
    )


def report(
    boxes: Iterable[Box],
    runs_of: Callable[[str], Sequence[Mapping[str, Any]]],
    images: Iterable[ImageCost],
    now: float,
    *,
    hourly_of: Callable[[Box], Rate | None],
    storage_of: Callable[[Box], Rate | None],
    address_of: Callable[[Box], float] = lambda _: 0.0,
    gone: Iterable[str] = (),
) -> CostReport:
    """The report of these boxes, and of the `gone` names (boxes `down`ed, whose runs still
    count in the totals: the month's bill keeps them)."""
    boxes = list(boxes)
    costs = [
        box_cost(b, runs_of(b.name), now, hourly=hourly_of(b), storage=storage_of(b),
                 address_per_hour=address_of(b))  # fmt: skip
        for b in boxes
    ]
    rows: list[BoxCost | str] = list(as_one_box(boxes, costs))
    live = {b.name for b in boxes}
    clusters: dict[str, list[BoxCost]] = {}
    for name in sorted(set(gone) - live):
        runs = runs_of(name)
        gone_cost = gone_box_cost(name, runs, now)
        if gone_cost.month_compute <= 0:  # not in this month's bill
            continue
        cluster = next((r.get("cluster") for r in runs if r.get("cluster")), None)
        if cluster and cluster not in live:  # a `down`ed box of several nodes: one row
            if cluster not in clusters:
                clusters[cluster] = []
                rows.append(cluster)  # its place in the list, filled below
            clusters[cluster].append(gone_cost)
        else:
            rows.append(gone_cost)
    made = [_summed(r, sorted(clusters[r], key=lambda n: (n.name != r, _rank(n.name))))
            if isinstance(r, str) else r for r in rows]
    return CostReport(now=now, boxes=tuple(made), images=tuple(images))


def _rank(name: str) -> int:
    tail = name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def as_one_box(boxes: Sequence[Box], costs: Sequence[BoxCost]) -> list[BoxCost]:
    """Each box of several nodes as one cost under its name (node 0's), where its first
    node stood: the nodes' figures summed, each node's own kept in `node_costs`."""
    groups: dict[str, list[tuple[int, BoxCost]]] = {}
    out: list[BoxCost | str] = []
    for b, c in zip(boxes, costs, strict=True):
        cluster = b.get("cluster")
        if not cluster:
            out.append(c)
            continue
        if cluster not in groups:
            groups[cluster] = []
            out.append(cluster)
        groups[cluster].append((int(b.get("node") or 0), c))
    return [_summed(item, [c for _, c in sorted(groups[item], key=lambda rc: rc[0])])
            if isinstance(item, str) else item for item in out]


def _summed(name: str, nodes: Sequence[BoxCost]) -> BoxCost:
    states = {n.state for n in nodes}
    running = sum(n.state == BoxState.RUNNING.value for n in nodes)
    prices = [n.per_hour for n in nodes if n.per_hour is not None]
    known = [n.complete_from for n in nodes if n.complete_from is not None]

    def total(field: str) -> float:
        return sum(getattr(n, field) for n in nodes)

    return BoxCost(
        name=name,
        state=states.pop() if len(states) == 1 else f"{running}/{len(nodes)} running",
        per_hour=sum(prices) if prices else None,
        storage_per_month=round(total("storage_per_month"), 4),
        spent_compute=total("spent_compute"), spent_storage=total("spent_storage"),
        month_compute=total("month_compute"), month_storage=total("month_storage"),
        hourly_rate=nodes[0].hourly_rate, storage_rate=nodes[0].storage_rate,
        hours_run=total("hours_run"), address_per_hour=total("address_per_hour"),
        complete_from=max(known) if known else None,
        nodes=len(nodes), node_costs=tuple(nodes),
    )


# --- prices from the catalog (AWS boxes); others cost nothing gpubox can see -------------
def hourly_rate(settings: Any, box: Box) -> Rate | None:
    """$/h of a box: the catalog's on-demand price (Price List API or the shipped snapshot);
    the price the box itself carries (e.g. its spot price) when the catalog has none."""
    if box.provider != "aws" or not box.type:
        return None
    if not box.spot:
        from gpubox.providers.aws import catalog

        price = catalog.on_demand_price(settings, box.type, box.region or "")
        if price is not None:
            return Rate(price.value, "h", price.source, price.date)
    if box.price_per_hour is not None:
        return Rate(box.price_per_hour, "h", "spot price at launch" if box.spot else "box", "")
    return None


def _storage(region: str, kind: str) -> Rate:
    from gpubox.providers.aws import catalog

    meta = catalog.price_snapshot().get("meta", {})
    value = catalog.storage_price_per_gb_month(region, kind)
    return Rate(
        value, "GB-month", f"{meta.get('source', 'snapshot')} ({kind})", meta.get("date", "")
    )


def disk_rate(region: str) -> Rate:
    return _storage(region, "gp3")


def snapshot_rate(region: str) -> Rate:
    return _storage(region, "snapshot")


def build_report(settings: Any, state: Any, boxes: Iterable[Box], now: float) -> CostReport:
    """The cost report of these boxes (from `box.status`) and every saved image."""
    from gpubox.box import _aws_in_use

    boxes = list(boxes)
    images: list[ImageCost] = []
    regions: list[str] = []
    volume_regions: list[str] = []
    if any(b.provider == "aws" for b in boxes) or _aws_in_use(state, settings):
        from gpubox.providers.aws.inventory import regions_holding_things, search_regions

        regions = regions_holding_things(settings, state)
        # A data volume carries no gpubox:box tag (it outlives boxes): every region is
        # asked for volumes, in parallel, so a new HOME counts them all.
        volume_regions = search_regions(settings, state)
    if regions:
        from gpubox.providers.aws.saved_images import list_saved_images

        for image in list_saved_images(settings, regions):
            images.append(
                image_cost(
                    image.name,
                    image.image_id,
                    image.region,
                    image.size_gb,
                    image.created_at,
                    now,
                    snapshot_rate(image.region),
                )  # fmt: skip
            )
    from gpubox.providers.aws.gc import ELASTIC_IP_PER_HOUR

    made = report(
        boxes,
        state.runs,
        images,
        now,
        hourly_of=lambda b: hourly_rate(settings, b),
        storage_of=lambda b: disk_rate(b.region or "") if b.provider == "aws" else None,
        address_of=lambda b: ELASTIC_IP_PER_HOUR if b.provider == "aws" else 0.0,
        gone={run["name"] for run in state.runs()},
    )
    if volume_regions:  # data volumes outlive boxes: billed per GB-month until `volume rm`
        from dataclasses import replace

        from gpubox.providers.aws.volumes import list_volumes

        made = replace(made, volumes=tuple(list_volumes(settings, volume_regions)))
    return made
