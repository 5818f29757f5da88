"""Regions: which ones the account can use, how far each is from here (latency.py),
which offer a type; the choice `up` makes and the table `gpubox regions` shows.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from gpubox.config import Settings
from gpubox.errors import GpuboxError, NotFound, did_you_mean
from gpubox.providers.aws import latency as latency_mod

ENABLED_STATUSES = ("opt-in-not-required", "opted-in")
# Regions are listed through one that every account has, so that a typo'd region
# name is answered with a suggestion rather than a DNS failure.
LISTING_REGION = "us-east-1"


@dataclass(frozen=True)
class Region:
    name: str
    opt_in_status: str

    @property
    def enabled(self) -> bool:
        return self.opt_in_status in ENABLED_STATUSES


class RegionNotEnabled(GpuboxError):
    """An opt-in region the account has not enabled: listed, never chosen."""


# ---- regions ---------------------------------------------------------------------


def list_regions(ec2: Any) -> list[Region]:
    """Every region AWS has, with whether this account may use it (1 API call)."""
    answer = ec2.describe_regions(AllRegions=True)
    regions = [
        Region(r["RegionName"], r.get("OptInStatus", "opt-in-not-required"))
        for r in answer["Regions"]
    ]
    return sorted(regions, key=lambda r: r.name)


def check_region(name: str, regions: Iterable[Region]) -> Region:
    """The region called `name`, or an error saying what was probably meant."""
    by_name = {r.name: r for r in regions}
    region = by_name.get(name)
    if region is None:
        hint = did_you_mean(name, by_name) or "see `gpubox regions` for the regions there are"
        raise NotFound(f"there is no AWS region called '{name}'", hint=hint)
    if not region.enabled:
        raise RegionNotEnabled(
            f"region {name} is not enabled for this account",
            hint="enable it in the AWS console (Account > AWS Regions), or pick another "
            "region from `gpubox regions`",
        )
    return region


def zones_offering(ec2: Any, instance_type: str) -> list[str]:
    """The availability zones of ec2's region that offer the type (1 API call)."""
    answer = ec2.describe_instance_type_offerings(
        LocationType="availability-zone",
        Filters=[{"Name": "instance-type", "Values": [instance_type]}],
    )
    return sorted(o["Location"] for o in answer["InstanceTypeOfferings"])


def rank(
    regions: Iterable[Region], latency: Mapping[str, float | None], first: str | None = None
) -> list[Region]:
    """Enabled regions, nearest first; unmeasured ones last: `first`, then by name."""
    usable = [r for r in regions if r.enabled]
    return sorted(
        usable,
        key=lambda r: (latency.get(r.name) is None, latency.get(r.name) or 0.0,
                       r.name != first, r.name),
    )  # fmt: skip


def fallback_region(settings: Settings) -> tuple[str, str]:
    """Where to start when no region's latency could be measured (a firewall, a proxy):
    the AWS configuration's region, else gpubox's default, us-east-1, the region with
    the most GPU types and zones. Never the first name in the alphabet. (region, why)"""
    from gpubox.providers.aws.session import DEFAULT_REGION, aws_session

    configured = aws_session(settings).boto().region_name
    if configured:
        return configured, "the AWS configuration's region (AWS_REGION, AWS_DEFAULT_REGION or profile)"
    return DEFAULT_REGION, f"gpubox's default, {DEFAULT_REGION}: the most GPU capacity"


# ---- the choice `up` makes -------------------------------------------------------


@dataclass(frozen=True)
class RegionChoice:
    region: str
    zones: tuple[str, ...]
    latency_ms: float | None
    # Nearest first, the other enabled regions (for failover with --any-region).
    alternatives: tuple[str, ...] = ()
    why: str = ""  # how it was chosen, said by `up` ("" for a configured region)


def choose_region(
    settings: Settings,
    state: Any,
    instance_type: str,
    ec2_for: Callable[[str], Any],
    *,
    region: str | None = None,
    all_regions: list[Region] | None = None,
) -> RegionChoice:
    """The region a box of `instance_type` goes to, and the zones there that offer it.

    The configured (or given) region is checked, never replaced; with none, the
    nearest enabled region that offers the type. API calls: 1 describe_regions plus
    1 offering lookup per region tried (nearest first, usually 1).
    """
    home = region or settings.region
    if all_regions is None:
        all_regions = list_regions(ec2_for(LISTING_REGION))
    if home:
        check_region(home, all_regions)
        zones = zones_offering(ec2_for(home), instance_type)
        if not zones:
            raise NotFound(
                f"{instance_type} is not offered in {home}",
                hint=f"see where it is: gpubox regions --type {instance_type}",
            )
        latency = latency_mod.cached(state, settings.latency_endpoint, time.time()) or {}
        others = tuple(r.name for r in rank(all_regions, latency) if r.name != home)
        return RegionChoice(home, tuple(zones), latency.get(home), others)
    enabled = [r for r in all_regions if r.enabled]
    latency = latency_mod.latencies(settings, state, [r.name for r in enabled])
    measured = any(latency.get(r.name) is not None for r in enabled)
    first, source = (None, "") if measured else fallback_region(settings)
    ranked = rank(enabled, latency, first)
    for index, candidate in enumerate(ranked):
        zones = zones_offering(ec2_for(candidate.name), instance_type)
        if zones:
            others = tuple(r.name for r in ranked[index + 1 :])
            ms = latency.get(candidate.name)
            if ms is not None:
                why = f"the nearest offering {instance_type}, {ms:.0f} ms from here"
            else:
                why = (f"latency could not be measured ({settings.latency_endpoint} did not "
                       f"answer), so {source}")  # fmt: skip
                if candidate.name != first:
                    why += f" ({first} does not offer {instance_type}; the next by name)"
            return RegionChoice(candidate.name, tuple(zones), ms, others, why)
    raise NotFound(
        f"{instance_type} is not offered in any region this account can use",
        hint="check the name with `gpubox types`, or enable more regions in the AWS console",
    )


# ---- the table `gpubox regions` shows ----------------------------------------------


@dataclass(frozen=True)
class RegionRow:
    name: str
    enabled: bool
    latency_ms: float | None
    zones: tuple[str, ...] | None = None  # None: no type asked about
    on_demand: float | None = None
    spot: float | None = None
    best: bool = False

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        data = asdict(self)
        data["zones"] = None if self.zones is None else list(self.zones)
        return data


def region_table(
    settings: Settings,
    state: Any,
    ec2_for: Callable[[str], Any],
    *,
    instance_type: str | None = None,
    on_demand_price: Callable[[str, str], float | None] | None = None,
    refresh: bool = False,
) -> list[RegionRow]:
    """Every region, nearest first; with a type, where it is offered and at what price.

    The best row (nearest enabled region offering the type, or nearest enabled one)
    is marked: it is what `up` picks when no region is configured.
    """
    from gpubox.providers.aws import spot

    all_regions = list_regions(ec2_for(LISTING_REGION))
    if settings.region:
        check_region(settings.region, all_regions)
    enabled = [r for r in all_regions if r.enabled]
    latency = latency_mod.latencies(settings, state, [r.name for r in enabled], refresh=refresh)
    measured = any(latency.get(r.name) is not None for r in enabled)
    first = None if measured else fallback_region(settings)[0]
    ordered = rank(enabled, latency, first) + [r for r in all_regions if not r.enabled]

    # Clients are made here, in one thread: making them is not thread-safe; using them is.
    clients = {r.name: ec2_for(r.name) for r in enabled} if instance_type else {}

    def details(region: str) -> tuple[tuple[str, ...], float | None, float | None]:
        assert instance_type is not None
        ec2 = clients[region]
        zones = tuple(zones_offering(ec2, instance_type))
        if not zones:
            return zones, None, None
        spot_now = spot.cheapest(spot.current_prices(ec2, instance_type))
        od = on_demand_price(region, instance_type) if on_demand_price else None
        return zones, od, spot_now[1] if spot_now else None

    found: dict[str, tuple[tuple[str, ...], float | None, float | None]] = {}
    if instance_type:
        with ThreadPoolExecutor(max_workers=min(8, max(1, len(enabled)))) as pool:
            futures = {r.name: pool.submit(details, r.name) for r in enabled}
            found = {name: f.result() for name, f in futures.items()}
    rows: list[RegionRow] = []
    best_marked = False
    for r in ordered:
        zones, od, spot_price = found.get(r.name, (None, None, None))
        # The same pick choose_region makes: the first enabled region offering the type.
        best = not best_marked and r.enabled and (instance_type is None or bool(zones))
        best_marked = best_marked or best
        rows.append(RegionRow(r.name, r.enabled, latency.get(r.name), zones, od, spot_price, best))
    return rows
