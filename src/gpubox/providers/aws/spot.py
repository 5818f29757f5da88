"""Spot: the current price against on-demand, the max-price check, the launch options,
and the two-minute interruption notice (what it was, and how to resume).

A gpubox spot box is a *persistent* request whose interruption behaviour is
"stop": an interruption keeps the disk, and `gpubox start` resumes it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gpubox.errors import InvalidInput

INTERRUPTION_FILE = ".gpubox/state/spot-interruption.json"  # under the box user's home
# StateReason codes EC2 gives an instance that spot stopped or terminated.
SPOT_STATE_REASONS = {
    "Server.SpotInstanceShutdown": "stop",
    "Server.SpotInstanceTermination": "terminate",
}


def current_prices(ec2: Any, instance_type: str) -> dict[str, float]:
    """The latest Linux spot price in each zone of ec2's region (1 API call)."""
    import datetime

    answer = ec2.describe_spot_price_history(
        InstanceTypes=[instance_type],
        ProductDescriptions=["Linux/UNIX"],
        # StartTime now: AWS then returns just the price in effect in each zone.
        StartTime=datetime.datetime.now(datetime.UTC),
    )
    latest: dict[str, tuple[Any, float]] = {}
    for item in answer["SpotPriceHistory"]:
        zone, when = item["AvailabilityZone"], item["Timestamp"]
        if zone not in latest or when > latest[zone][0]:
            latest[zone] = (when, float(item["SpotPrice"]))
    return {zone: price for zone, (_, price) in sorted(latest.items())}


def cheapest(prices: Mapping[str, float]) -> tuple[str, float] | None:
    """(zone, price) of the cheapest zone, or None when there is no price."""
    if not prices:
        return None
    zone = min(prices, key=lambda z: (prices[z], z))
    return zone, prices[zone]


def price_line(instance_type: str, spot_price: float | None, on_demand: float | None) -> str:
    """'g5.xlarge spot $0.4000/h against on-demand $1.0060/h (60% less)'."""

    def money(value: float | None) -> str:
        return "?" if value is None else f"${value:.4f}/h"

    line = f"{instance_type} spot {money(spot_price)} against on-demand {money(on_demand)}"
    if spot_price is not None and on_demand:
        line += f" ({round(100 * (1 - spot_price / on_demand))}% less)"
    return line


def check_max_price(
    instance_type: str, max_price: float | None, prices: Mapping[str, float]
) -> list[str]:
    """The zones whose current spot price is within `max_price` (all when no max).

    A max price below the price in every zone cannot be fulfilled: say so before
    anything is created.
    """
    if max_price is not None and max_price <= 0:
        raise InvalidInput(f"--max-price must be above 0, not {max_price}")
    if max_price is None or not prices:
        return list(prices)
    zones = [zone for zone, price in prices.items() if price <= max_price]
    if not zones:
        low = cheapest(prices)
        assert low is not None
        raise InvalidInput(
            f"--max-price ${max_price:.4f}/h is below the current spot price of "
            f"{instance_type}: ${low[1]:.4f}/h at the cheapest ({low[0]})",
            hint=f"raise --max-price to at least {low[1]:.4f}, or leave it out "
            "(you then pay the spot price, never more than on-demand)",
        )
    return zones


def market_options(max_price: float | None) -> dict[str, Any]:
    """InstanceMarketOptions for run_instances: persistent, stop on interruption.

    persistent + stop: an interruption stops the box and keeps its disk (and notebooks);
    the request brings it back when capacity returns, or `gpubox start` does."""
    options: dict[str, Any] = {
        "SpotInstanceType": "persistent",
        "InstanceInterruptionBehavior": "stop",
    }
    if max_price is not None:
        options["MaxPrice"] = f"{max_price:.5f}"
    return {"MarketType": "spot", "SpotOptions": options}


# ---- the interruption notice -----------------------------------------------------


@dataclass(frozen=True)
class Interruption:
    action: str  # stop | terminate | hibernate
    time: str | None = None  # when AWS said it would act (ISO 8601), if known
    noticed_at: str | None = None  # when the box saw the notice

    def describe(self, box_name: str) -> str:
        when = f" at {self.time}" if self.time else ""
        if self.action == "terminate":
            return f"spot interruption{when}: the instance was terminated"
        return f"interrupted by spot{when} ({self.action}); resume with `gpubox start {box_name}`"


def interruption_from_instance(instance: Mapping[str, Any]) -> Interruption | None:
    """What EC2 itself says: a spot instance stopped or terminated by AWS, else None."""
    reason = (instance.get("StateReason") or {}).get("Code", "")
    action = SPOT_STATE_REASONS.get(reason)
    if action is None or instance.get("InstanceLifecycle") != "spot":
        return None
    return Interruption(action=action)


def interruption_from_record(text: str) -> Interruption | None:
    """The record spot_watch.py left on the box (the file's text), or None."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or "action" not in data:
        return None
    return Interruption(str(data["action"]), data.get("time"), data.get("noticed_at"))


def read_interruption(runner: Any) -> Interruption | None:
    """The interruption the box recorded, read over its runner; None when there was none."""
    result = runner.run(f"cat ~/{INTERRUPTION_FILE} 2>/dev/null || true", check=False)
    return interruption_from_record(result.stdout) if result.stdout.strip() else None
