"""The check before a launch, and what to do when AWS has no capacity.

`preflight` answers, in a handful of API calls and before anything is created:
which region, which zones, does the quota hold the box, what it costs (on-demand,
and spot against it). `launch_with_failover` then tries one place after another:
the zones of the region, then the next acceptable type, then (only when asked)
the next nearest region; one line per try; a region given up on is cleaned.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from gpubox.config import Settings
from gpubox.errors import CapacityError, GpuboxError, NotFound, QuotaExceeded
from gpubox.providers.aws import quotas, regions, spot

T = TypeVar("T")


@dataclass(frozen=True)
class Attempt:
    region: str
    zone: str
    instance_type: str

    def __str__(self) -> str:
        return f"{self.instance_type} in {self.zone}"


@dataclass(frozen=True)
class LaunchPlan:
    region: str
    zones: tuple[str, ...]  # of the region, offering instance_type (within --max-price)
    instance_type: str
    types: tuple[str, ...]  # every acceptable type, in order
    vcpus: int
    quota: quotas.Quota | None  # None: it could not be read
    on_demand: float | None
    spot_price: float | None  # cheapest zone now; None when not spot
    alternatives: tuple[str, ...]  # other enabled regions, nearest first
    lines: tuple[str, ...]  # what to tell the user before launching
    # describe_instance_types of each type, as the preflight read it (not asked again).
    type_infos: dict[str, dict] = field(default_factory=dict, compare=False)


def preflight(
    settings: Settings,
    state: Any,
    *,
    types: Sequence[str],
    spot_market: bool,
    max_price: float | None,
    ec2_for: Callable[[str], Any],
    sq_for: Callable[[str], Any],
    on_demand_price: Callable[[str, str], float | None] | None = None,
    region: str | None = None,
    count: int = 1,
) -> LaunchPlan:
    """Everything `up` checks before creating anything. Raises; never creates.
    count: how many instances the box is (its nodes); the quota must hold them all.

    API calls: describe_regions 1, describe_instance_types 1, offerings 1 per region
    looked at (nearest first), describe_instances 1, get_service_quota 1,
    spot: describe_spot_price_history 1, plus on_demand_price's own (1 Pricing call).
    """
    if not types:
        raise NotFound("no instance type given", hint="pass --type, e.g. --type g5.xlarge")
    from gpubox.providers.aws import inventory

    home = region or settings.region
    # The account's regions, as `status` and `down` read them a moment ago (a day's cache).
    listing = ec2_for(regions.LISTING_REGION)
    all_regions = inventory.all_regions(settings, state, ec2=listing)
    if home and home not in {r.name for r in all_regions if r.enabled}:
        all_regions = inventory.all_regions(settings, state, fresh=True, ec2=listing)
    if home:
        regions.check_region(home, all_regions)  # a typo stops here, with a suggestion
    # A type that exists nowhere stops here, before any region is searched for it.
    infos: dict[str, dict] = {}
    vcpus = quotas.vcpus_of_types(ec2_for(home or regions.LISTING_REGION), types, infos)
    choice: regions.RegionChoice | None = None
    chosen_type = types[0]
    for candidate in types:
        try:
            choice = regions.choose_region(
                settings, state, candidate, ec2_for, region=region, all_regions=all_regions
            )
        except NotFound:
            if candidate == types[-1]:
                raise
            continue
        chosen_type = candidate
        break
    assert choice is not None
    ec2 = ec2_for(choice.region)
    needs = (f"{chosen_type} needs {vcpus[chosen_type]} vCPUs" if count == 1 else
             f"{count} nodes of {chosen_type} need {count * vcpus[chosen_type]} vCPUs")  # fmt: skip
    quota: quotas.Quota | None = None
    try:
        quota = quotas.check_room(
            sq_for(choice.region), ec2, chosen_type, spot=spot_market, region=choice.region,
            known_vcpus=vcpus, count=count,
        )  # fmt: skip
        quota_line = f"quota '{quota.name}': {quota.free_vcpus} of {int(quota.limit_vcpus)} vCPUs free; {needs}"
    except GpuboxError:
        raise  # QuotaExceeded with the numbers, or a type that does not exist
    except Exception as exc:  # noqa: BLE001
        # The quota is advice before the launch: without permission to read Service
        # Quotas (common on restricted student accounts) the launch itself answers
        # VcpuLimitExceeded, which the failover reports as the quota.
        quota_line = f"quota: cannot read it here ({type(exc).__name__}); {needs}"
    on_demand = on_demand_price(choice.region, chosen_type) if on_demand_price else None
    zones, spot_now = choice.zones, None
    latency_text = (
        f" ({choice.latency_ms:.0f} ms from here)" if choice.latency_ms is not None else ""
    )
    latency_text = f" ({choice.why})" if choice.why else latency_text
    lines = [f"region {choice.region}{latency_text}, zones {', '.join(choice.zones)}", quota_line]
    if spot_market:
        prices = {z: p for z, p in spot.current_prices(ec2, chosen_type).items() if z in zones}
        allowed = spot.check_max_price(chosen_type, max_price, prices)
        zones = tuple(z for z in zones if z in allowed or z not in prices)
        low = spot.cheapest(prices)
        spot_now = low[1] if low else None
        lines.append(spot.price_line(chosen_type, spot_now, on_demand))
    elif on_demand is not None:
        lines.append(f"{chosen_type} on-demand ${on_demand:.4f}/h")
    return LaunchPlan(
        choice.region,
        tuple(zones),
        chosen_type,
        tuple(types),
        vcpus[chosen_type],
        quota,
        on_demand,
        spot_now,
        choice.alternatives,
        tuple(lines),
        infos,
    )


def region_attempts(
    plan: LaunchPlan, region: str, zones_for: Callable[[str, str], Sequence[str]]
) -> Iterator[Attempt]:
    """In one region: each acceptable type in order, each zone that offers it."""
    types = (
        plan.types[plan.types.index(plan.instance_type) :] if region == plan.region else plan.types
    )
    for instance_type in types:
        if region == plan.region and instance_type == plan.instance_type:
            zones: Sequence[str] = plan.zones
        else:
            zones = zones_for(region, instance_type)
        for zone in zones:
            yield Attempt(region, zone, instance_type)


def attempts(
    plan: LaunchPlan,
    *,
    regions_to_try: Sequence[str] = (),
    zones_for: Callable[[str, str], Sequence[str]],
) -> Iterator[Attempt]:
    """Zones of the region, then the next type, then the next region; offerings asked lazily."""
    for region in (plan.region, *[r for r in regions_to_try if r != plan.region]):
        yield from region_attempts(plan, region, zones_for)


def launch_with_failover(
    tries: Iterable[Attempt],
    launch: Callable[[Attempt], T],
    *,
    on_try: Callable[[str], None],
    give_up_region: Callable[[str], None] | None = None,
) -> T:
    """The first launch that succeeds; one line per try; a region left is cleaned.

    `launch` makes one attempt and, when refused, raises CapacityError or
    QuotaExceeded having removed what it made for that attempt. A quota refusal
    skips the rest of that type's family in that region. Any other error stops
    at once (after cleaning the region).
    """
    failures: list[GpuboxError] = []
    skipped: set[tuple[str, str | None]] = set()
    current_region: str | None = None
    number = 0
    try:
        for attempt in tries:
            if current_region is not None and attempt.region != current_region and give_up_region:
                give_up_region(current_region)
            current_region = attempt.region
            family = quotas.family_of(attempt.instance_type)
            if (attempt.region, family) in skipped:
                continue
            number += 1
            try:
                result = launch(attempt)
            except CapacityError as exc:
                on_try(f"try {number}: {attempt}: no capacity now")
                failures.append(exc)
                continue
            except QuotaExceeded as exc:
                on_try(f"try {number}: {attempt}: quota reached")
                failures.append(exc)
                skipped.add((attempt.region, family))
                continue
            on_try(f"try {number}: {attempt}: launched")
            current_region = None  # this region is kept
            return result
    finally:
        if current_region is not None and give_up_region:
            give_up_region(current_region)
    if failures and all(isinstance(f, QuotaExceeded) for f in failures):
        raise failures[-1]
    raise CapacityError(
        f"no capacity anywhere gpubox tried ({number} tries)",
        hint="try again later, accept more types (--type g6.xlarge,g5.xlarge), "
        "or allow other regions (--any-region)",
    )


# ---- the launch AwsProvider makes ----------------------------------------------------


def configured_region(settings: Settings, spec_region: str | None) -> str | None:
    """--region, else gpubox's setting, else boto3's (AWS_REGION, profile); None: gpubox picks."""
    from gpubox.providers.aws import session

    return spec_region or settings.region or session.aws_session(settings).boto().region_name


def launch(provider: Any, spec: Any) -> Any:
    """Preflight, then try zones, types and (with --any-region) regions until one launches.

    Each region's key pair and security group come from provider.launch_context, which
    deletes what it made when the body raises: a region given up on keeps nothing.
    """
    from gpubox.providers.aws import catalog, instances, session

    settings = provider.settings
    types = tuple(spec.types) or ((spec.type,) if spec.type else ())

    def on_demand(region: str, instance_type: str) -> float | None:
        found = catalog.on_demand_price(settings, instance_type, region)
        return found.value if found else None

    with session.aws_errors("checking before launch"):
        plan = preflight(
            settings, provider.state, types=types, spot_market=spec.spot,
            max_price=spec.max_price, on_demand_price=on_demand,
            ec2_for=lambda r: session.client(settings, "ec2", r),
            sq_for=lambda r: session.client(settings, "service-quotas", r),
            region=configured_region(settings, spec.region),
            count=getattr(spec, "nodes", 1),
        )  # fmt: skip
    if getattr(spec, "zone", None) in plan.zones:  # a data volume's zone first
        plan = dataclasses.replace(
            plan, zones=(spec.zone, *[z for z in plan.zones if z != spec.zone])
        )
    for line in plan.lines:
        provider.say(line)
    regions_to_try = plan.alternatives if spec.any_region else configured_failover(settings)

    def zones_for(region: str, instance_type: str) -> list[str]:
        with session.aws_errors(f"checking where {instance_type} is offered in {region}"):
            return regions.zones_offering(session.client(settings, "ec2", region), instance_type)

    last: GpuboxError | None = None
    tried: list[str] = []
    for region in (plan.region, *[r for r in regions_to_try if r != plan.region]):
        tries = list(region_attempts(plan, region, zones_for))  # offerings asked region by region
        if not tries:
            continue
        tried.append(region)
        try:
            # The preflight and the offerings asked above checked the type here already.
            with provider.launch_context(
                spec, region, tries[0].instance_type, known=plan.type_infos
            ) as ctx:
                inst = launch_with_failover(
                    tries,
                    lambda a, ctx=ctx: instances.launch_attempt(ctx, spec, a.instance_type, a.zone),
                    on_try=provider.say,
                )
            return provider._box(region, inst)
        except (CapacityError, QuotaExceeded) as exc:
            provider.say(f"giving up on {region}: {exc.message}")
            last = exc
        except GpuboxError as exc:
            if region == plan.region:
                raise  # the region asked for: its problem is the user's to see
            # Another region that cannot take the box (no image there ...): the next one.
            provider.say(f"skipping {region}: {exc.message}")
    if isinstance(last, QuotaExceeded):
        raise last
    raise CapacityError(
        f"no capacity for {', '.join(types)} in {', '.join(tried) or plan.region} now",
        hint="try again later, accept more types (--type g6.xlarge,g5.xlarge)"
        + (
            ""
            if spec.any_region
            else ", or allow other regions (--any-region, or the failover_regions setting)"
        ),
    )


def configured_failover(settings: Settings) -> tuple[str, ...]:
    """The `failover_regions` setting as a tuple, in the user's order."""
    text = settings.failover_regions or ""
    return tuple(r.strip() for r in text.split(",") if r.strip())


def nearest_region(settings: Settings, instance_type: str) -> str:
    """The nearest enabled region offering the type (latency cached in the State)."""
    from gpubox.providers.aws import session
    from gpubox.state import State

    state = State(settings.state_path)
    try:
        with session.aws_errors("choosing a region"):
            ec2_for = lambda r: session.client(settings, "ec2", r)  # noqa: E731
            return regions.choose_region(settings, state, instance_type, ec2_for).region
    finally:
        state.close()
