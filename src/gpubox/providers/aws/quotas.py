"""GPU vCPU quotas: how many the account may run, how many run now, what that leaves
in boxes, and the increase request that makes room.

EC2 limits GPU instances by vCPUs per family and market, per region. The quota
codes live here and nowhere else.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gpubox.errors import GpuboxError, InvalidInput, NotFound, QuotaExceeded

SERVICE_CODE = "ec2"
G_VT = "G and VT"
P = "P"
# (family, market) -> (quota code, the quota's name in the AWS console)
QUOTAS: dict[tuple[str, str], tuple[str, str]] = {
    (G_VT, "on-demand"): ("L-DB2E81BA", "Running On-Demand G and VT instances"),
    (P, "on-demand"): ("L-417A185B", "Running On-Demand P instances"),
    (G_VT, "spot"): ("L-3819A6DF", "All G and VT Spot Instance Requests"),
    (P, "spot"): ("L-7212CCBC", "All P Spot Instance Requests"),
}
OPEN_REQUEST_STATUSES = ("PENDING", "CASE_OPENED")
_FAMILY_RE = re.compile(r"^(?P<letters>vt|g|p)\d")


def family_of(instance_type: str) -> str | None:
    """'G and VT' for g4dn/g5/g6/vt1 ..., 'P' for p3/p4d/p5 ..., None for non-GPU types."""
    match = _FAMILY_RE.match(instance_type)
    if not match:
        return None
    return P if match["letters"] == "p" else G_VT


def market_of(spot: bool) -> str:
    return "spot" if spot else "on-demand"


def quota_for(instance_type: str, spot: bool = False) -> tuple[str, str, str, str]:
    """(family, market, code, name) of the quota that holds `instance_type`."""
    family = family_of(instance_type)
    if family is None:
        raise InvalidInput(
            f"{instance_type} is not a GPU type: it has no GPU vCPU quota gpubox manages",
            hint="GPU types start with g, vt or p (g5.xlarge, g6.xlarge, p4d.24xlarge); "
            "see `gpubox types`",
        )
    market = market_of(spot)
    code, name = QUOTAS[(family, market)]
    return family, market, code, name


@dataclass(frozen=True)
class QuotaRequest:
    id: str
    desired_vcpus: float
    status: str
    created: str | None = None

    @property
    def open(self) -> bool:
        return self.status in OPEN_REQUEST_STATUSES


@dataclass(frozen=True)
class Quota:
    code: str
    name: str
    family: str
    market: str
    limit_vcpus: float
    used_vcpus: int
    requests: tuple[QuotaRequest, ...] = ()  # newest first

    @property
    def free_vcpus(self) -> int:
        return max(0, int(self.limit_vcpus) - self.used_vcpus)

    def room_for(self, vcpus_per_box: int) -> int:
        return self.free_vcpus // vcpus_per_box if vcpus_per_box > 0 else 0

    @property
    def pending(self) -> QuotaRequest | None:
        return next((r for r in self.requests if r.open), None)


# ---- reading ---------------------------------------------------------------------


def vcpus_of_types(
    ec2: Any, instance_types: Iterable[str], infos: dict[str, dict] | None = None
) -> dict[str, int]:
    """Default vCPUs of each type (1 API call); a type that does not exist: NotFound.
    `infos`, when given, receives each type's whole description (asked once, used again)."""
    from botocore.exceptions import ClientError

    wanted = sorted(set(instance_types))
    if not wanted:
        return {}
    try:
        answer = ec2.describe_instance_types(InstanceTypes=wanted)
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "InvalidInstanceType":
            raise _unknown_type(ec2, wanted) from None
        raise
    if infos is not None:
        infos.update((t["InstanceType"], t) for t in answer["InstanceTypes"])
    return {t["InstanceType"]: int(t["VCpuInfo"]["DefaultVCpus"]) for t in answer["InstanceTypes"]}


def _unknown_type(ec2: Any, wanted: list[str]) -> NotFound:
    """NotFound naming the first type that does not exist, with the closest real name.

    Only on this error path is every type listed (several pages), to suggest the name.
    """
    from gpubox.errors import did_you_mean

    names: set[str] = set()
    for page in ec2.get_paginator("describe_instance_types").paginate():
        names.update(t["InstanceType"] for t in page["InstanceTypes"])
    bad = [t for t in wanted if t not in names] or wanted
    return NotFound(
        f"'{bad[0]}' is not an EC2 instance type",
        hint=did_you_mean(bad[0], sorted(names))
        or "see `gpubox types` for the GPU types there are (e.g. g5.xlarge)",
    )


def running_instances(ec2: Any) -> list[tuple[str, bool]]:
    """(type, is_spot) of every pending or running instance in ec2's region."""
    found: list[tuple[str, bool]] = []
    for page in ec2.get_paginator("describe_instances").paginate(
        Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}]
    ):
        for reservation in page["Reservations"]:
            for instance in reservation["Instances"]:
                found.append(
                    (instance["InstanceType"], instance.get("InstanceLifecycle") == "spot")
                )
    return found


def used_vcpus(
    instances: Iterable[tuple[str, bool]], vcpus: Mapping[str, int]
) -> dict[tuple[str, str], int]:
    """vCPUs in use per (family, market), from the running instances."""
    used = {key: 0 for key in QUOTAS}
    for instance_type, is_spot in instances:
        family = family_of(instance_type)
        if family is not None:
            used[(family, market_of(is_spot))] += vcpus.get(instance_type, 0)
    return used


def quota_value(sq: Any, code: str) -> float:
    """The account's applied value of the quota, else AWS's default (1 API call, usually)."""
    try:
        return float(
            sq.get_service_quota(ServiceCode=SERVICE_CODE, QuotaCode=code)["Quota"]["Value"]
        )
    except sq.exceptions.NoSuchResourceException:
        answer = sq.get_aws_default_service_quota(ServiceCode=SERVICE_CODE, QuotaCode=code)
        return float(answer["Quota"]["Value"])


def increase_requests(sq: Any, code: str) -> tuple[QuotaRequest, ...]:
    """Increase requests filed for the quota, newest first (1 API call)."""
    answer = sq.list_requested_service_quota_change_history_by_quota(
        ServiceCode=SERVICE_CODE, QuotaCode=code
    )
    requests = [
        QuotaRequest(
            id=item["Id"],
            desired_vcpus=float(item["DesiredValue"]),
            status=item["Status"],
            created=str(item["Created"]) if item.get("Created") else None,
        )
        for item in answer.get("RequestedQuotas", [])
    ]
    return tuple(sorted(requests, key=lambda r: r.created or "", reverse=True))


def read_quotas(sq: Any, ec2: Any, *, with_requests: bool = True) -> list[Quota]:
    """All four GPU quotas of the region with their use now (and requests filed)."""
    instances = running_instances(ec2)
    vcpus = vcpus_of_types(ec2, {t for t, _ in instances if family_of(t)})
    used = used_vcpus(instances, vcpus)
    quotas = []
    for (family, market), (code, name) in QUOTAS.items():
        quotas.append(
            Quota(
                code,
                name,
                family,
                market,
                limit_vcpus=quota_value(sq, code),
                used_vcpus=used[(family, market)],
                requests=increase_requests(sq, code) if with_requests else (),
            )
        )
    return quotas


# ---- the check before a launch, and the request ----------------------------------


def check_room(
    sq: Any,
    ec2: Any,
    instance_type: str,
    *,
    spot: bool,
    region: str,
    count: int = 1,
    known_vcpus: Mapping[str, int] | None = None,
) -> Quota:
    """The quota that must hold `count` more boxes; QuotaExceeded with the numbers if it cannot.

    2 or 3 API calls: describe_instances, get_service_quota, and describe_instance_types
    for the types not in `known_vcpus` (the new one and those running, together).
    """
    quota, vcpus = current_quota(sq, ec2, instance_type, spot, known_vcpus=known_vcpus)
    code, name = quota.code, quota.name
    need = vcpus[instance_type] * count
    if quota.free_vcpus < need:
        spot_flag = " --spot" if spot else ""
        what = instance_type if count == 1 else f"{count} nodes of {instance_type}"
        raise QuotaExceeded(
            f"{what} need{'s' if count == 1 else ''} {need} vCPUs, but the quota '{name}' ({code}) in {region} "
            f"is {int(quota.limit_vcpus)} vCPUs with {quota.used_vcpus} in use: "
            f"{quota.free_vcpus} free",
            hint=f"ask AWS for more (often approved within a day): gpubox quota request "
            f"--type {instance_type}{spot_flag} --region {region}"
            + (f" --count {count}" if count > 1 else ""),
        )
    return quota


def current_quota(
    sq: Any,
    ec2: Any,
    instance_type: str,
    spot: bool,
    *,
    known_vcpus: Mapping[str, int] | None = None,
    with_requests: bool = False,
) -> tuple[Quota, dict[str, int]]:
    """The quota that holds the type, with its vCPUs in use now (and open requests);
    also the vCPUs of every type looked up on the way."""
    family, market, code, name = quota_for(instance_type, spot)
    instances = running_instances(ec2)
    vcpus = dict(known_vcpus or {})
    missing = ({instance_type} | {t for t, _ in instances if family_of(t)}) - set(vcpus)
    vcpus.update(vcpus_of_types(ec2, missing))
    quota = Quota(
        code,
        name,
        family,
        market,
        quota_value(sq, code),
        used_vcpus(instances, vcpus)[(family, market)],
        increase_requests(sq, code) if with_requests else (),
    )
    return quota, vcpus


@dataclass(frozen=True)
class RequestOutcome:
    quota: Quota
    vcpus_per_box: int
    desired_vcpus: int
    filed: QuotaRequest | None  # None: nothing filed (already room, or one open)
    reason: str


def request_increase(
    sq: Any, ec2: Any, instance_type: str, *, count: int = 1, spot: bool = False
) -> RequestOutcome:
    """File the increase that makes room for `count` more boxes of the type.

    Nothing is filed when the quota already has room, or when a request is still open.
    """
    if count < 1:
        raise InvalidInput(f"--count must be 1 or more, not {count}")
    quota, vcpus = current_quota(sq, ec2, instance_type, spot, with_requests=True)
    code = quota.code
    per_box = vcpus[instance_type]
    desired = quota.used_vcpus + per_box * count
    if desired <= quota.limit_vcpus:
        return RequestOutcome(quota, per_box, desired, None, "the quota already has room")
    if quota.pending is not None:
        return RequestOutcome(
            quota,
            per_box,
            desired,
            None,
            f"request {quota.pending.id} for {int(quota.pending.desired_vcpus)} vCPUs "
            f"is still {quota.pending.status}",
        )
    try:
        answer = sq.request_service_quota_increase(
            ServiceCode=SERVICE_CODE, QuotaCode=code, DesiredValue=float(desired)
        )
    except sq.exceptions.ResourceAlreadyExistsException:
        return RequestOutcome(quota, per_box, desired, None, "a request is already open")
    except sq.exceptions.IllegalArgumentException as exc:
        raise GpuboxError(f"AWS refused the request: {exc}") from None
    item = answer["RequestedQuota"]
    filed = QuotaRequest(
        item["Id"],
        float(item["DesiredValue"]),
        item["Status"],
        str(item["Created"]) if item.get("Created") else None,
    )
    return RequestOutcome(quota, per_box, desired, filed, "filed")
