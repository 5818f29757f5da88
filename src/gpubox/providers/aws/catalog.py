"""The one place that knows GPU instance types: what each has, where, and what it costs.

Facts come from EC2 itself (describe_instance_types, describe_instance_type_offerings,
describe_spot_price_history). On-demand prices come from the AWS Price List API when
it answers, else from the approximate snapshot shipped in gpubox/data/prices.json,
always with their source and date so nobody mistakes a snapshot for a quote.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from gpubox.errors import GpuboxError, NotFound, did_you_mean
from gpubox.providers.aws.prices import (
    Price,
    on_demand_price,
    price_snapshot,
    spot_price,
    spot_prices,
    storage_price_per_gb_month,
)
from gpubox.providers.aws.session import aws_errors, client

__all__ = [
    "FAMILY_NOTES", "GpuType", "Price", "check_offered", "describe_type", "gpu_type",
    "gpu_types", "offered_in", "on_demand_price", "price_snapshot", "regions_offering",
    "spot_price", "spot_prices", "storage_price_per_gb_month", "vcpus_of",
]

if TYPE_CHECKING:
    from collections.abc import Iterable

    from gpubox.config import Settings

# One line per family: what it is for. The longest matching prefix wins.
FAMILY_NOTES: dict[str, str] = {
    "g4dn": "cheapest way to learn (T4, 16 GB)",
    "g4ad": "AMD Radeon Pro V520; no CUDA",
    "g5": "A10G 24 GB; good all-rounder for training",
    "g5g": "Graviton (arm64) with T4G",
    "g6": "L4 24 GB, inference-optimised; cheap and current",
    "g6e": "L40S 48 GB; large models on one GPU",
    "gr6": "L4 with more memory per vCPU",
    "p3": "V100 (older); FP16 training",
    "p3dn": "8×V100 32 GB, 100 Gbit networking",
    "p4d": "8×A100 40 GB; multi-GPU training",
    "p4de": "8×A100 80 GB",
    "p5": "H100 80 GB (8× in p5.48xlarge), for scaling",
    "p5e": "H200 141 GB (8× in p5e.48xlarge)",
    "p5en": "H200 141 GB, faster networking",
    "p6": "8×B200 (Blackwell)",
}
# Types that AWS lists with GPUs but that cannot run CUDA deep learning.
NON_CUDA_MANUFACTURERS = ("AMD", "Xilinx")



@dataclass(frozen=True)
class GpuType:
    name: str
    gpu_model: str
    gpu_count: int
    gpu_memory_gib: float  # per GPU
    vcpus: int
    memory_gib: float
    arch: str  # x86_64 | arm64
    note: str = ""
    on_demand: Price | None = None
    spot: Price | None = None

    @property
    def family(self) -> str:
        return self.name.split(".", 1)[0]


def family_note(type_name: str) -> str:
    family = type_name.split(".", 1)[0]
    return FAMILY_NOTES.get(family, "")


def _gpu_type_from(info: dict[str, Any]) -> GpuType | None:
    gpus = info.get("GpuInfo", {}).get("Gpus") or []
    if not gpus:
        return None
    gpu = gpus[0]
    if gpu.get("Manufacturer") in NON_CUDA_MANUFACTURERS:
        return None
    count = sum(int(g.get("Count", 0)) for g in gpus)
    mem_mib = float(gpu.get("MemoryInfo", {}).get("SizeInMiB", 0))
    archs = info.get("ProcessorInfo", {}).get("SupportedArchitectures") or ["x86_64"]
    return GpuType(
        name=info["InstanceType"],
        gpu_model=str(gpu.get("Name", "?")),
        gpu_count=count,
        gpu_memory_gib=round(mem_mib / 1024, 1),
        vcpus=int(info.get("VCpuInfo", {}).get("DefaultVCpus", 0)),
        memory_gib=round(float(info.get("MemoryInfo", {}).get("SizeInMiB", 0)) / 1024, 1),
        arch="arm64" if "arm64" in archs else "x86_64",
        note=family_note(info["InstanceType"]),
    )


# Every NVIDIA GPU type is in a g* or p* family; asking for those alone is 8× less to read.
GPU_TYPE_PATTERNS = ("g*", "p*")


def _describe_all_types(
    settings: Settings, region: str, patterns: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    filters = [{"Name": "instance-type", "Values": list(patterns)}] if patterns else []
    with aws_errors(f"listing instance types in {region}"):
        pages = client(settings, "ec2", region).get_paginator("describe_instance_types")
        return [t for page in pages.paginate(Filters=filters) for t in page.get("InstanceTypes", [])]


def _offered_names(settings: Settings, region: str) -> set[str]:
    with aws_errors(f"listing instance types offered in {region}"):
        pages = client(settings, "ec2", region).get_paginator("describe_instance_type_offerings")
        return {
            o["InstanceType"]
            for page in pages.paginate(LocationType="region")
            for o in page.get("InstanceTypeOfferings", [])
        }


def _gpu_matches(gpu_type: GpuType, wanted: Iterable[str]) -> bool:
    wanted = [w.lower() for w in wanted]
    model = gpu_type.gpu_model.lower()
    return not wanted or any(w in (model, gpu_type.family, gpu_type.name) for w in wanted)


def gpu_types(
    settings: Settings,
    region: str,
    gpu: str | Iterable[str] | None = None,
    *,
    prices: bool = True,
) -> list[GpuType]:
    """The CUDA GPU types offered in `region` (optionally only those whose GPU model or
    family matches one of `gpu`, e.g. "T4", "H100", "g5"), with on-demand and spot prices."""
    wanted = [gpu] if isinstance(gpu, str) else list(gpu or [])
    offered = _offered_names(settings, region)
    found = []
    for info in _describe_all_types(settings, region, GPU_TYPE_PATTERNS):
        gt = _gpu_type_from(info)
        if gt and gt.name in offered and _gpu_matches(gt, wanted):
            found.append(gt)
    found.sort(key=lambda t: (t.family, t.gpu_count, t.vcpus, t.name))
    if not prices or not found:
        return found
    names = [t.name for t in found]
    spots = spot_prices(settings, names, region)
    # The first alone: when the Price List API is out of reach, one failure tells us so.
    on_demand = [on_demand_price(settings, names[0], region)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        on_demand += pool.map(lambda n: on_demand_price(settings, n, region), names[1:])
    return [
        replace(t, on_demand=od, spot=spots.get(t.name)) for t, od in zip(found, on_demand, strict=False)
    ]


def describe_type(settings: Settings, type_name: str, region: str) -> dict[str, Any]:
    """describe_instance_types for one type; NotFound with a suggestion for an unknown name."""
    import botocore.exceptions

    ec2 = client(settings, "ec2", region)
    try:
        found = ec2.describe_instance_types(InstanceTypes=[type_name]).get("InstanceTypes", [])
    except botocore.exceptions.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code not in ("InvalidInstanceType", "InvalidParameterValue"):
            with aws_errors(f"looking up {type_name}"):
                raise
        found = []
    if not found:
        names = [t["InstanceType"] for t in _describe_all_types(settings, region)]
        raise NotFound(
            f"'{type_name}' is not an EC2 instance type",
            hint=did_you_mean(type_name, names) or "`gpubox types` lists the GPU types",
        )
    return found[0]


def gpu_type(
    settings: Settings, type_name: str, region: str, info: dict[str, Any] | None = None
) -> GpuType:
    """The GpuType for a name (no prices); NotFound for unknown or GPU-less types.
    `info`: the type's description when the caller has it already (no call then)."""
    info = info or describe_type(settings, type_name, region)
    found = _gpu_type_from(info)
    if found is None:
        raise NotFound(
            f"{type_name} has no NVIDIA GPU",
            hint="`gpubox types` lists the GPU types (g4dn.xlarge is the cheapest)",
        )
    return found


def vcpus_of(settings: Settings, type_name: str, region: str) -> int:
    """Default vCPUs of a type: what counts against the EC2 vCPU quotas."""
    info = describe_type(settings, type_name, region)
    return int(info.get("VCpuInfo", {}).get("DefaultVCpus", 0))


# Where a type is offered ----------------------------------------------------


def offered_in(settings: Settings, type_name: str, region: str) -> list[str]:
    """The availability zones of `region` that offer `type_name` (empty: none)."""
    with aws_errors(f"checking where {type_name} is offered in {region}"):
        pages = client(settings, "ec2", region).get_paginator("describe_instance_type_offerings")
        zones = {
            o["Location"]
            for page in pages.paginate(
                LocationType="availability-zone",
                Filters=[{"Name": "instance-type", "Values": [type_name]}],
            )
            for o in page.get("InstanceTypeOfferings", [])
        }
    return sorted(zones)


def regions_offering(
    settings: Settings, type_name: str, regions: Iterable[str]
) -> dict[str, list[str]]:
    """{region: zones} for the regions among `regions` that offer the type (asked in parallel)."""
    regions = list(regions)

    def zones(region: str) -> list[str]:
        try:
            return offered_in(settings, type_name, region)
        except GpuboxError:  # a region not enabled for the account: it offers nothing to us
            return []

    with ThreadPoolExecutor(max_workers=min(8, max(1, len(regions)))) as pool:
        found = dict(zip(regions, pool.map(zones, regions), strict=False))
    return {r: z for r, z in found.items() if z}


def check_offered(
    settings: Settings, type_name: str, region: str, other_regions: Iterable[str] = ()
) -> list[str]:
    """The zones of `region` offering the type; NotFound naming where it is offered if none."""
    describe_type(settings, type_name, region)  # unknown names get their suggestion first
    zones = offered_in(settings, type_name, region)
    if zones:
        return zones
    others = regions_offering(settings, type_name, [r for r in other_regions if r != region])
    if others:
        where = ", ".join(
            f"{r} ({len(z)} zone{'s' if len(z) != 1 else ''})"
            for r, z in sorted(others.items(), key=lambda kv: -len(kv[1]))
        )
        hint = f"it is offered in {where}; pass --region"
    else:
        hint = "`gpubox types --region R` lists what a region offers"
    raise NotFound(f"{type_name} is not offered in {region}", hint=hint)
