"""`gpubox doctor --live`: ask AWS, without making anything, whether each call in
permissions.PERMISSIONS is allowed here.

Reads are made for real (they change and bill nothing); every EC2 call that changes
something is sent with DryRun=True, which AWS answers with DryRunOperation (allowed)
or UnauthorizedOperation (denied) and does nothing else. RunInstances is sent with the
parameters `up` builds, its guard user data included. A call on something that must
exist (stopping an instance, deleting a group) is checked on one of gpubox's own when
the region has one, and said to be unchecked otherwise. All calls run in parallel
threads: the reads first (they find gpubox's resources), then the dry runs.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gpubox.errors import GpuboxError
from gpubox.providers.aws import permissions
from gpubox.providers.aws.permissions import DRY_RUN, NONE, READ, Permission
from gpubox.providers.aws.session import CREDENTIAL_CODES, client, error_code, map_error

if TYPE_CHECKING:
    from gpubox.config import Settings

ALLOWED = "allowed"
DENIED = "denied"
UNCHECKED = "not checked"
DENIED_CODES = frozenset({"UnauthorizedOperation", "AccessDenied", "AccessDeniedException",
                          "UnauthorizedException", "Blocked", "OptInRequired"})
# The type RunInstances and the type-specific reads are asked about: the cheapest GPU type.
CHECK_TYPE = "g4dn.xlarge"
CHECK_NAME = "doctor-check"
THREADS = 16


class Unchecked(Exception):
    """A check that needs something this account or region does not have."""


@dataclass(frozen=True)
class Result:
    permission: Permission
    verdict: str  # ALLOWED, DENIED or UNCHECKED
    detail: str = ""  # the AWS code, or why it was not checked
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        p = self.permission
        return {"call": p.call, "iam_action": p.iam_action, "feature": p.feature,
                "check": p.check, "verdict": self.verdict, "detail": self.detail,
                "disables": p.disables}  # fmt: skip


@dataclass
class Probe:
    """What the checks need: the region, the identity, and gpubox's resources found there."""

    settings: Settings
    region: str
    instance_type: str = CHECK_TYPE
    owner: str = "unknown"
    found: dict[str, Any] = field(default_factory=dict)  # kind -> id (or params)
    missing: dict[str, str] = field(default_factory=dict)  # kind -> why it is not there

    @property
    def image_parameter(self) -> str:
        from gpubox.providers.aws.images import DEFAULT_IMAGE, IMAGE_PARAMETERS

        return IMAGE_PARAMETERS[(DEFAULT_IMAGE, "x86_64")]

    def needs(self, kind: str) -> Any:
        if kind in self.found:
            return self.found[kind]
        raise Unchecked(self.missing.get(kind) or f"no {kind} of gpubox's in {self.region}")

    def tags(self, resource_type: str) -> list[dict[str, str]]:
        from gpubox.providers.aws.network import tags_for

        return tags_for(CHECK_NAME, self.owner, resource_type)


def _method(perm: Permission) -> str:
    from botocore import xform_name

    return xform_name(perm.operation)


def _client(probe: Probe, perm: Permission) -> Any:
    region = "us-east-1" if perm.service == "pricing" else probe.region
    return client(probe.settings, perm.service, region, purpose="once")


def check_one(probe: Probe, perm: Permission) -> tuple[Result, Any]:
    """One check: (its result, the answer of a read that was allowed)."""
    import botocore.exceptions

    started = time.monotonic()

    def result(verdict: str, detail: str = "") -> Result:
        line = " ".join(detail.split())  # one line, however the answer was laid out
        line = line if len(line) <= 120 else line[:119] + "…"
        return Result(perm, verdict, line, time.monotonic() - started)

    if perm.check == NONE or perm.params is None:
        return result(UNCHECKED, "AWS has no way to ask without doing it"), None
    try:
        params = dict(perm.params(probe))
    except Unchecked as exc:
        return result(UNCHECKED, str(exc)), None
    if perm.check == DRY_RUN:
        params["DryRun"] = True
    try:
        answer = getattr(_client(probe, perm), _method(perm))(**params)
    except (botocore.exceptions.NoCredentialsError, botocore.exceptions.PartialCredentialsError,
            botocore.exceptions.ProfileNotFound) as exc:
        raise map_error(exc, "asking AWS") or exc from exc  # nothing can be checked
    except botocore.exceptions.ClientError as exc:
        code = error_code(exc)
        if code in CREDENTIAL_CODES:
            raise map_error(exc, "asking AWS") or exc from exc
        if code == "DryRunOperation":
            return result(ALLOWED), None
        if code in DENIED_CODES:
            return result(DENIED, code), None
        message = exc.response.get("Error", {}).get("Message", "")
        return result(UNCHECKED, f"AWS answered {code or 'an error'}: {message}"), None
    except GpuboxError:  # a bad region, a missing profile: nothing can be checked
        raise
    except Exception as exc:  # noqa: BLE001 - no answer (network, endpoint): said, not raised
        return result(UNCHECKED, f"no answer: {exc}"), None
    if perm.check == DRY_RUN:  # an answer with DryRun=True: AWS did not dry-run it
        return result(UNCHECKED, "AWS did not answer DryRunOperation"), None
    return result(ALLOWED), answer


def _first(answer: Any, key: str, field_name: str, where: Any = None) -> str | None:
    for item in (answer or {}).get(key, []):
        if where is None or where(item):
            return item.get(field_name)
    return None


def _instances(answer: Any) -> list[dict[str, Any]]:
    return [i for r in (answer or {}).get("Reservations", []) for i in r.get("Instances", [])
            if i.get("State", {}).get("Name") not in ("terminated", "shutting-down")]  # fmt: skip


def _learn(probe: Probe, results: dict[str, tuple[Result, Any]]) -> None:
    """What the reads found: gpubox's resources the dry runs are made on."""
    from gpubox.providers.aws.network import KIND_TAG, tag_value

    def answer(call: str) -> Any:
        return results.get(call, (None, None))[1]

    ident = answer("sts:GetCallerIdentity")
    if ident:
        probe.owner = ident.get("Arn", probe.owner)
    vpc = _first(answer("ec2:DescribeVpcs"), "Vpcs", "VpcId")
    if vpc:
        probe.found["vpc"] = vpc
    else:
        probe.missing["vpc"] = f"no default VPC found in {probe.region}"
    live = _instances(answer("ec2:DescribeInstances"))
    if live:
        probe.found["instance"] = live[0]["InstanceId"]
        probe.found["instance name"] = tag_value(live[0], "Name") or live[0]["InstanceId"]
        probe.found["zone"] = live[0].get("Placement", {}).get("AvailabilityZone")
        spot = next((i.get("SpotInstanceRequestId") for i in live
                     if i.get("SpotInstanceRequestId")), None)  # fmt: skip
        if spot:
            probe.found["spot request"] = spot
    probe.missing["spot request"] = f"no spot box of gpubox's in {probe.region}"
    probe.found.setdefault("zone", f"{probe.region}a")
    for kind, call, key, id_field in (
        ("group", "ec2:DescribeSecurityGroups", "SecurityGroups", "GroupId"),
        ("key", "ec2:DescribeKeyPairs", "KeyPairs", "KeyName"),
        ("image", "ec2:DescribeImages", "Images", "ImageId"),
        ("address", "ec2:DescribeAddresses", "Addresses", "AllocationId"),
    ):
        found = _first(answer(call), key, id_field)
        if found:
            probe.found[kind] = found
    groups = (answer("ec2:DescribePlacementGroups") or {}).get("PlacementGroups", [])
    ours = [g for g in groups if tag_value(g, KIND_TAG)]
    if ours:
        probe.found["placement group"] = ours[0]["GroupName"]
    volumes = (answer("ec2:DescribeVolumes") or {}).get("Volumes", [])
    data = [v for v in volumes if tag_value(v, KIND_TAG) == "data-volume"]
    if data:
        probe.found["data volume"] = data[0]["VolumeId"]
        probe.found["bigger"] = int(data[0].get("Size", 1)) + 1
    probe.missing["data volume"] = f"no data volume of gpubox's in {probe.region}"
    probe.missing["bigger"] = probe.missing["data volume"]
    snapshot = _first(answer("ec2:DescribeSnapshots"), "Snapshots", "SnapshotId")
    if snapshot:
        probe.found["snapshot"] = snapshot


def _launch_params(probe: Probe) -> None:
    """RunInstances' parameters as `up` builds them (guard user data included), without
    the ClientToken, and without key or group when the region has none of gpubox's."""
    from gpubox.providers.aws import instances
    from gpubox.providers.aws.images import resolve_image
    from gpubox.providers.base import BoxSpec

    try:
        image = resolve_image(probe.settings, probe.region, None, "x86_64")
    except GpuboxError as exc:
        probe.missing["launch"] = f"the default image cannot be found: {exc.message}"[:160]
        return
    spec = BoxSpec(name=CHECK_NAME, provider="aws", type=probe.instance_type,
                   disk_gb=max(64, image.root_size_gb or 0), idle_stop_minutes=60)
    ctx = instances.LaunchContext(
        settings=probe.settings, region=probe.region, image=image,
        key_name=probe.found.get("key", ""), group_id=probe.found.get("group", ""),
        owner=probe.owner,
    )  # fmt: skip
    params = instances.run_params(ctx, spec, probe.instance_type, None)
    params.pop("ClientToken", None)
    if not ctx.key_name:
        params.pop("KeyName", None)
    if not ctx.group_id:
        params.pop("SecurityGroupIds", None)
    probe.found["launch"] = params


def _stands_alone(probe: Probe, perm: Permission) -> bool:
    try:
        perm.params(Probe(probe.settings, probe.region, probe.instance_type))  # type: ignore[misc]
    except Unchecked:
        return False
    return True


@dataclass(frozen=True)
class Report:
    region: str
    results: tuple[Result, ...]
    seconds: float

    def of(self, verdict: str) -> list[Result]:
        return [r for r in self.results if r.verdict == verdict]

    def summary(self) -> str:
        denied = self.of(DENIED)
        if not denied:
            unchecked = len(self.of(UNCHECKED))
            tail = f" ({unchecked} could not be checked here)" if unchecked else ""
            return f"every checked call is allowed in {self.region}{tail}"
        by_feature: dict[str, list[Result]] = {}
        for r in denied:
            by_feature.setdefault(r.permission.feature, []).append(r)
        parts = []
        for rs in by_feature.values():
            actions = ", ".join(r.permission.iam_action for r in rs)
            parts.append(f"without {actions}: {rs[0].permission.disables}")
        rest = "" if "core" in by_feature else "; everything else works"
        return "; ".join(parts) + rest

    def as_dict(self) -> dict[str, Any]:
        return {"region": self.region, "seconds": round(self.seconds, 2),
                "summary": self.summary(), "results": [r.as_dict() for r in self.results]}


def check(settings: Settings, region: str, instance_type: str = CHECK_TYPE) -> Report:
    """Every check of the table in `region`, in parallel. Makes nothing."""
    started = time.monotonic()
    probe = Probe(settings, region, instance_type)
    # The reads that need nothing found first (the others wait for what those find).
    reads = [p for p in permissions.PERMISSIONS if p.check == READ and _stands_alone(probe, p)]
    others = [p for p in permissions.PERMISSIONS if p not in reads]
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        # The first call alone: it makes the session and its credentials once.
        first = check_one(probe, reads[0])
        answers = {reads[0].call: first, **dict(zip(
            [p.call for p in reads[1:]], pool.map(lambda p: check_one(probe, p), reads[1:]),
            strict=True))}  # fmt: skip
        _learn(probe, answers)
        _launch_params(probe)
        answers.update(zip([p.call for p in others],
                           pool.map(lambda p: check_one(probe, p), others), strict=True))
    order = {p.call: i for i, p in enumerate(permissions.PERMISSIONS)}
    results = sorted((r for r, _ in answers.values()), key=lambda r: order[r.permission.call])
    return Report(region, tuple(results), time.monotonic() - started)
