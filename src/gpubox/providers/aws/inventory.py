"""Which AWS regions to ask about gpubox's boxes, and asking them all at once.

The cloud is the truth: a laptop with the credentials and an empty GPUBOX_HOME must
see, cost and remove every box. So every enabled region of the account is asked
(the `aws_regions` setting narrows that), in parallel, one or two calls each. The
local state keeps two things only as a fast path, never as the only record: the
regions where gpubox has seen or made something (asked first, and always), and the
account's list of enabled regions (one DescribeRegions a day).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from gpubox.errors import GpuboxError
from gpubox.providers.aws.network import BOX_TAG
from gpubox.providers.aws.session import client, default_region, used_regions

if TYPE_CHECKING:
    from gpubox.config import Settings
    from gpubox.providers.aws.regions import Region
    from gpubox.state import State

T = TypeVar("T")
ENABLED_KEY = "aws.enabled_regions"
ENABLED_TTL_SECONDS = 24 * 3600.0
# Real accounts have 17 regions enabled by default and up to ~35 with opt-ins; each
# call mostly waits on the network, so one thread per region costs little.
MAX_THREADS = 32


def configured_regions(settings: Settings) -> tuple[str, ...]:
    """The `aws_regions` setting ("us-east-1, eu-west-1") as a tuple; empty: all enabled."""
    text = (settings.aws_regions or "").replace("[", " ").replace("]", " ")
    names = (r.strip().strip("'\"") for r in text.replace(",", " ").split())
    return tuple(dict.fromkeys(n for n in names if n))


def all_regions(
    settings: Settings, state: State | None, now: float | None = None, *, fresh: bool = False,
    ec2: Any = None,
) -> list[Region]:
    """Every region AWS has, with whether this account may use it: one DescribeRegions,
    remembered in the state for a day (fresh=True asks again)."""
    from gpubox.providers.aws.regions import LISTING_REGION, Region, list_regions
    from gpubox.providers.aws.session import aws_errors

    now = time.time() if now is None else now
    if state is not None and not fresh:
        try:
            cached = json.loads(state.get(ENABLED_KEY) or "{}")
            if now - float(cached.get("at", 0)) < ENABLED_TTL_SECONDS and cached.get("all"):
                return [Region(str(n), str(s)) for n, s in cached["all"]]
        except (ValueError, TypeError, AttributeError):
            pass
    with aws_errors("listing the account's regions"):
        found = list_regions(ec2 or client(settings, "ec2", LISTING_REGION, purpose="read"))
    if state is not None:
        listed = [[r.name, r.opt_in_status] for r in found]
        state.put(ENABLED_KEY, json.dumps({"at": now, "all": listed}))
    return found


def enabled_regions(settings: Settings, state: State | None, now: float | None = None) -> list[str]:
    """The regions this account may use (opted in, or needing no opt-in)."""
    return [r.name for r in all_regions(settings, state, now) if r.enabled]


def known_regions(settings: Settings, state: State | None) -> list[str]:
    """The fast path: regions where gpubox made or saw something, and the default one."""
    found = used_regions(state) if state is not None else []
    home = default_region(settings)
    return found if home in found else [*found, home]


def search_regions(settings: Settings, state: State | None) -> list[str]:
    """Every region to ask: the enabled ones (or the `aws_regions` setting), plus the
    known ones (a box launched with --region outside the setting is still found)."""
    wide = list(configured_regions(settings)) or enabled_regions(settings, state)
    return sorted(set(wide) | set(known_regions(settings, state)))


def each_region(
    regions: Iterable[str],
    ask: Callable[[str], T],
    on_failure: Callable[[str, GpuboxError], None] | None = None,
) -> dict[str, T]:
    """{region: ask(region)} asked in parallel threads.

    A region that fails is reported to on_failure and left out, so one broken region
    does not hide the boxes of the others (an organisation may deny some regions);
    when every region fails, the first error is raised: the answer would be empty,
    not true.
    """
    regions = list(dict.fromkeys(regions))
    if not regions:
        return {}

    def guarded(region: str) -> tuple[str, T | None, GpuboxError | None]:
        try:
            return region, ask(region), None
        except GpuboxError as exc:
            return region, None, exc

    if len(regions) == 1:
        answers = [guarded(regions[0])]
    else:
        with ThreadPoolExecutor(max_workers=min(MAX_THREADS, len(regions))) as pool:
            answers = list(pool.map(guarded, regions))
    failed = [(r, e) for r, _, e in answers if e is not None]
    if failed and len(failed) == len(answers):
        raise failed[0][1]
    for region, exc in failed:
        if on_failure is not None:
            on_failure(region, exc)
    return {r: a for r, a, e in answers if e is None}  # type: ignore[misc]


def tagged_regions(settings: Settings, regions: Iterable[str]) -> list[str]:
    """The regions among `regions` holding anything tagged by gpubox: one Resource Groups
    Tagging API call per region, in parallel. A region where that API cannot be asked
    (no tag:GetResources permission, say) is kept, to be looked at the long way."""
    regions = list(regions)

    def holds(region: str) -> bool:
        try:
            found = client(settings, "resourcegroupstaggingapi", region, purpose="read").get_resources(
                TagFilters=[{"Key": BOX_TAG}], ResourcesPerPage=1
            )
        except Exception:  # noqa: BLE001 - unknown here: look the long way
            return True
        return bool(found.get("ResourceTagMappingList"))

    answers = each_region(regions, holds)
    return [r for r in regions if answers.get(r)]


def regions_holding_things(
    settings: Settings, state: State | None, searched: Iterable[str] | None = None
) -> list[str]:
    """The regions worth a close look (gc, saved images): those of `searched` (default:
    search_regions) where the Tagging API finds something of gpubox's, and the known
    ones (key pairs and addresses are missing from some Tagging API answers)."""
    searched = list(searched) if searched is not None else search_regions(settings, state)
    known = [r for r in known_regions(settings, state) if r in searched]
    tagged = tagged_regions(settings, [r for r in searched if r not in known])
    return sorted({*known, *tagged})
