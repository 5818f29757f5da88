"""Prices: on-demand from the AWS Price List API or the shipped snapshot, spot from EC2's
spot price history, and EBS storage per GB-month. Every number carries its source and date.

The snapshot (gpubox/data/prices.json) is approximate and dated; it exists so that
`gpubox types` and `status` can say roughly what a box costs when the Price List API
is out of reach (no permission, no network, moto).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from gpubox.providers.aws.session import aws_errors, client

if TYPE_CHECKING:
    from gpubox.config import Settings

PRICES_RESOURCE = "data/prices.json"
# The Price List API answers from here only.
PRICING_REGION = "us-east-1"


@dataclass(frozen=True)
class Price:
    value: float  # USD per hour
    source: str  # "aws-pricing-api", "snapshot", "spot-price-history"
    date: str  # ISO date (or datetime) the number is from


@lru_cache(maxsize=1)
def price_snapshot() -> dict[str, Any]:
    """The shipped snapshot of approximate public prices (see its "meta")."""
    from importlib import resources

    text = resources.files("gpubox").joinpath(PRICES_RESOURCE).read_text(encoding="utf-8")
    return json.loads(text)


def snapshot_price(type_name: str, region: str) -> Price | None:
    data = price_snapshot()
    value = data.get("on_demand", {}).get(region, {}).get(type_name)
    if value is None:
        return None
    return Price(float(value), "snapshot", data["meta"]["date"])


def snapshot_per_hour(type_name: str | None, region: str | None) -> float | None:
    """$/h of an on-demand instance from the price snapshot, or None: no network, so it
    can be said while a command is being interrupted."""
    if not type_name or not region:
        return None
    try:
        price = snapshot_price(type_name, region)
    except Exception:  # noqa: BLE001 - a price is a nicety there, never a reason to fail
        return None
    return price.value if price else None


_pricing_lock = threading.Lock()
# Held by the first Price List call of a process, so threads asking at once wait for its
# answer instead of each asking: a Price List API that fails costs one request a command.
_first_call_lock = threading.Lock()
# Per gpubox home (stable across the settings a command derives): True once the Price
# List API answered, False once it failed; then the snapshot is used for the process.
_pricing_usable: dict[Any, bool] = {}
_price_cache: dict[tuple[Any, str, str], Price | None] = {}


def _region_location(settings: Settings, region: str) -> str | None:
    """The Price List API's "location" for a region, e.g. "US East (N. Virginia)"."""
    names = price_snapshot().get("locations", {})
    return names.get(region)


def _pricing_api_price(settings: Settings, type_name: str, region: str) -> Price | None:
    location = _region_location(settings, region)
    if location is None:
        return None
    filters = {
        "instanceType": type_name,
        "location": location,
        "operatingSystem": "Linux",
        "tenancy": "Shared",
        "preInstalledSw": "NA",
        "capacitystatus": "Used",
    }
    # purpose="once": no retry; a failure falls back to the snapshot, not to a second ask.
    pricing = client(settings, "pricing", PRICING_REGION, purpose="once")
    response = pricing.get_products(
        ServiceCode="AmazonEC2",
        Filters=[{"Type": "TERM_MATCH", "Field": k, "Value": v} for k, v in filters.items()],
        MaxResults=10,
    )
    for raw in response.get("PriceList", []):
        product = json.loads(raw) if isinstance(raw, str) else raw
        for term in product.get("terms", {}).get("OnDemand", {}).values():
            for dimension in term.get("priceDimensions", {}).values():
                usd = dimension.get("pricePerUnit", {}).get("USD")
                if usd is not None and float(usd) > 0:
                    date = str(term.get("effectiveDate", ""))[:10] or product.get(
                        "publicationDate", ""
                    )
                    return Price(float(usd), "aws-pricing-api", date)
    return None


def on_demand_price(settings: Settings, type_name: str, region: str) -> Price | None:
    """Linux on-demand $/h: the Price List API when it answers, else the snapshot, else None."""
    key = (settings, type_name, region)
    with _pricing_lock:
        if key in _price_cache:
            return _price_cache[key]
        usable = _pricing_usable.get(settings.data_dir)
    price = None
    if usable is None:  # not asked yet in this process: one caller asks, the others wait
        with _first_call_lock:
            with _pricing_lock:
                usable = _pricing_usable.get(settings.data_dir)
            if usable is None:
                price = _ask_price_list(settings, type_name, region)
    elif usable:
        price = _ask_price_list(settings, type_name, region)
    if price is None:
        price = snapshot_price(type_name, region)
    with _pricing_lock:
        _price_cache[key] = price
    return price


def _ask_price_list(settings: Settings, type_name: str, region: str) -> Price | None:
    """The Price List API's price, or None; a failure marks the API unusable (quietly:
    the snapshot's prices are marked approximate wherever they are shown)."""
    try:
        price = _pricing_api_price(settings, type_name, region)
    except Exception:  # noqa: BLE001 - any failure (no access, no network, moto): the snapshot
        with _pricing_lock:
            _pricing_usable[settings.data_dir] = False
        return None
    with _pricing_lock:
        _pricing_usable[settings.data_dir] = True
    return price


def spot_prices(settings: Settings, type_names: list[str], region: str) -> dict[str, Price]:
    """The current Linux spot price of each type: the lowest over zones of each zone's latest."""
    import datetime as dt

    latest: dict[tuple[str, str], tuple[Any, float]] = {}
    now = dt.datetime.now(dt.UTC)
    with aws_errors(f"reading spot prices in {region}"):
        pages = client(settings, "ec2", region).get_paginator("describe_spot_price_history")
        for page in pages.paginate(
            InstanceTypes=type_names,
            ProductDescriptions=["Linux/UNIX"],
            StartTime=now - dt.timedelta(hours=3),
        ):
            for item in page.get("SpotPriceHistory", []):
                key = (item["InstanceType"], item.get("AvailabilityZone", ""))
                stamp = item.get("Timestamp") or now
                if key not in latest or stamp > latest[key][0]:
                    latest[key] = (stamp, float(item["SpotPrice"]))
    best: dict[str, tuple[float, Any]] = {}
    for (type_name, _zone), (stamp, value) in latest.items():
        if type_name not in best or value < best[type_name][0]:
            best[type_name] = (value, stamp)
    return {
        t: Price(v, "spot-price-history", s.isoformat() if hasattr(s, "isoformat") else str(s))
        for t, (v, s) in best.items()
    }


def spot_price(settings: Settings, type_name: str, region: str) -> Price | None:
    return spot_prices(settings, [type_name], region).get(type_name)


def storage_price_per_gb_month(region: str, volume_type: str = "gp3") -> float:
    """EBS $/GB-month for a volume type in a region (snapshot data; us-east-1's if unknown)."""
    table = price_snapshot().get("storage", {}).get(volume_type, {})
    return float(table.get(region, table.get("default", 0.08)))
