"""Every input a person gives gpubox, checked once, before anything is made or asked.

The rules live here and nowhere else: `BoxSpec` runs `check_spec` when it is made, the
AWS session runs `check_region` before it makes a client for a region, and `up` asks
`confirm_ssh_from` before it opens SSH to a wide network. Nothing here calls a cloud.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING

from gpubox.errors import ConfirmationRequired, InvalidInput, NotFound, did_you_mean

if TYPE_CHECKING:
    from gpubox.providers.base import BoxSpec

MIN_DISK_GB = 8
MAX_DISK_GB = 16384  # the largest gp3 volume EBS makes
# An --ssh-from network with more addresses than this is said out loud and needs a yes.
WIDE_CIDR_ADDRESSES = 4096
LOOKALIKES = str.maketrans({"l": "1", "i": "1", "I": "1", "o": "0", "O": "0"})


def check_port(port: int | None, flag: str = "--port") -> int | None:
    """A TCP port number (1-65535), or None."""
    if port is not None and not 1 <= port <= 65535:
        raise InvalidInput(f"{flag} {port} is not a TCP port", hint="use a number from 1 to 65535")
    return port


def check_disk(gb: int) -> int:
    if not MIN_DISK_GB <= gb <= MAX_DISK_GB:
        raise InvalidInput(
            f"--disk {gb} is outside what a gp3 volume can be ({MIN_DISK_GB} to {MAX_DISK_GB} GB)",
            hint="pass --disk in GB, e.g. --disk 100",
        )
    return gb


def parse_price(text: str | float, flag: str = "--price") -> float:
    """Dollars per hour a person typed ("0.35", "$0.35", "0.35/h", "0"): a finite number
    of 0 or more, or a clear error."""
    raw = str(text).strip()
    cleaned = raw.removeprefix("$").removesuffix("/h").strip()
    try:
        value = float(cleaned)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or not cleaned:
        raise InvalidInput(
            f"{flag + ' ' if flag else ''}'{raw}' is not a price: give dollars per hour, 0 or more",
            hint="e.g. 0.35 for a host you rent at $0.35/h, or 0 for a machine that costs "
            "you nothing",
        )
    return value


# An EC2 type's name: family (g4dn, g6e, p4de, p6-b200, m5), a dot, a size AWS uses.
TYPE_SHAPE = re.compile(
    r"^[a-z][a-z0-9-]*\.(nano|micro|small|medium|large|xlarge|\d+xlarge|metal(-\d+xl)?)$"
)


def check_gpu_types(types: tuple[str, ...]) -> tuple[str, ...]:
    """Every name in a --type list is a GPU type (g*, vt*, p*); names them all if not."""
    from gpubox.providers.aws.quotas import family_of

    wrong = [t for t in types if family_of(t) is None]
    if wrong:
        listed = ",".join(types)
        raise InvalidInput(
            f"{', '.join(wrong)} in --type {listed} {'is not a GPU type' if len(wrong) == 1 else 'are not GPU types'}",
            hint="GPU types start with g, vt or p (g4dn.xlarge, g6.xlarge, p4d.24xlarge); "
            "see `gpubox types`",
        )
    for name in types:
        check_type_name(name)
    return types


def check_type_name(name: str) -> str:
    """A name no EC2 type can have (`g4dn.xlarg`) is named, with the closest GPU type of
    the offline price list, before any AWS call (and so before credentials are looked at)."""
    if not TYPE_SHAPE.match(name):
        raise NotFound(  # as when AWS itself says so (catalog.describe_type)
            f"'{name}' is not an EC2 instance type",
            hint=did_you_mean(name, known_gpu_types()) or "`gpubox types` lists the GPU types",
        )
    return name


@lru_cache(maxsize=1)
def known_gpu_types() -> frozenset[str]:
    """The GPU types the shipped price list names (offline; AWS may offer more)."""
    import json
    from importlib import resources

    data = json.loads(resources.files("gpubox").joinpath("data/prices.json").read_text())
    return frozenset(t for region in data.get("on_demand", {}).values() for t in region)


def check_spec(spec: BoxSpec) -> BoxSpec:
    """What a BoxSpec asks must be possible, whatever made it (CLI or Python)."""
    check_disk(spec.disk_gb)
    check_port(spec.port, "the port in --host")
    if spec.max_price is not None:
        if not spec.spot:
            raise InvalidInput(
                "--max-price is a spot price, but --spot was not given",
                hint=f"add --spot to launch a spot instance at up to ${spec.max_price:g}/h, "
                "or leave --max-price out for on-demand",
            )
        if spec.max_price <= 0:
            raise InvalidInput(f"--max-price {spec.max_price} must be more than 0")
    if spec.price_per_hour is not None:
        if spec.provider == "aws":
            raise InvalidInput(
                "--price is for ssh and local boxes: an AWS box's price comes from AWS's "
                "price list",
                hint="leave --price out (see `gpubox types` for the prices)",
            )
        parse_price(spec.price_per_hour)
    types = spec.types or ((spec.type,) if spec.type else ())
    if spec.host is not None and types:
        raise InvalidInput(
            "--host and --type ask for two different boxes",
            hint="--host USER@HOST sets up a machine you already have; --type launches an AWS "
            "instance; pass one of them",
        )
    if spec.provider == "aws":
        check_gpu_types(types)
    if spec.region is not None:
        check_region(spec.region, "from --region or the region setting")
    if spec.ssh_from is not None:
        from gpubox.providers.aws.network import check_cidr

        check_cidr(spec.ssh_from)
    return spec


def wide_cidr_addresses(cidr: str) -> int | None:
    """How many addresses the network admits, when that is more than WIDE_CIDR_ADDRESSES."""
    count = ipaddress.ip_network(cidr.strip(), strict=False).num_addresses
    return count if count > WIDE_CIDR_ADDRESSES else None


def confirm_ssh_from(
    cidr: str | None, *, yes: bool, confirm: Callable[[str], bool] | None = None
) -> None:
    """A yes before SSH is opened to more than a few thousand addresses."""
    count = wide_cidr_addresses(cidr) if cidr else None
    if count is None or yes:
        return
    what = f"--ssh-from {cidr} admits {count:,} addresses to the box's SSH port"
    if confirm is not None and confirm(f"{what}. Go on?"):
        return
    raise ConfirmationRequired(
        what,
        hint="admit only your own address or network (e.g. --ssh-from 203.0.113.7/32), "
        "or add --yes if you mean it",
    )


# ---- AWS region names, from botocore's own endpoint data (no network) ----------------


@lru_cache(maxsize=1)
def _aws_regions() -> tuple[frozenset[str], tuple[re.Pattern[str], ...]]:
    import botocore.session

    data = botocore.session.get_session().get_data("endpoints")
    known: set[str] = set()
    patterns = []
    for partition in data.get("partitions", []):
        known.update(partition.get("regions", {}))
        known.update(partition.get("services", {}).get("ec2", {}).get("endpoints", {}))
        if partition.get("regionRegex"):
            patterns.append(re.compile(partition["regionRegex"]))
    known = {r for r in known if not r.startswith("fips-") and not r.endswith("-fips")}
    return frozenset(known), tuple(patterns)


def known_aws_regions() -> frozenset[str]:
    return _aws_regions()[0]


def check_region(name: str, source: str = "") -> str:
    """A name botocore knows as a region, or one shaped like an AWS region (a region
    newer than this botocore); otherwise one line naming the closest real region."""
    known, patterns = _aws_regions()
    if name in known or (name and any(p.match(name) for p in patterns)):
        return name
    # 'l' for '1' and 'O' for '0' are the usual slips; say the region they spell first.
    lookalike = name[: name.rfind("-") + 1] + name[name.rfind("-") + 1 :].translate(LOOKALIKES)
    hint = f"did you mean '{lookalike}'?" if lookalike in known else did_you_mean(name, known)
    where = f" ({source})" if source else ""
    shown = f"'{name}'" if name else "'' (an empty name)"
    raise NotFound(
        f"there is no AWS region called {shown}{where}",
        hint=hint or "see `gpubox regions` for the regions there are",
    )
