"""`gpubox selftest`: prove on the user's own AWS account, for about a cent, that a box's
guard stops it.

It launches the cheapest micro instance of the region (not a GPU) from the default
image, with the real guard user data at a one-minute idle limit and a 15-minute uptime
cap, through the same key pair, security group and launch code as `up`, and no setup.
Then it watches from outside: the instance running, the guard's line on its console
(guard.sh prints it once installed; EC2's GetConsoleOutput returns it), the instance
stopped by its own OS shutdown. Then it terminates the instance, removes what it made
and checks by tag that nothing is left in the region.

The box's name is SELFTEST_BOX. A run cut short leaves what it made (the CLI says what,
from inflight); the next run, or `gpubox selftest --clean`, finds it by that name and
removes it first. Even if this machine dies mid-test, the guard's uptime cap stops the
instance after 15 minutes; its disk then bills (the plan says how much a day) until a
re-run.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gpubox import inflight
from gpubox.errors import GpuboxError, NotFound
from gpubox.providers.aws import instances, keypairs, network
from gpubox.providers.aws.images import Image, resolve_image
from gpubox.providers.aws.network import BOX_TAG
from gpubox.providers.aws.session import aws_errors, caller_identity, client, error_code
from gpubox.providers.base import BoxSpec

if TYPE_CHECKING:
    from gpubox.config import Settings

SELFTEST_BOX = "gpubox-selftest"
# What guard.sh prints on the console once the guard is installed (then box=, idle=, at=).
GUARD_MARKER = "::gpubox guard=installed"
# x86_64 types with 1 GiB (the default image is a Deep Learning AMI: 0.5 GiB is tight for
# its first boot), and their approximate us-east-1 on-demand price, $/h, used when the
# Price List API cannot be asked (the shipped snapshot holds GPU types only).
CANDIDATES = {"t3a.micro": 0.0094, "t3.micro": 0.0104, "t2.micro": 0.0116}
IDLE_MINUTES = 1
MAX_HOURS = 0.25  # the guard's uptime cap: it stops the instance whatever the laptop does
DEADLINE_MINUTES = 20.0  # the client's own: past it, the instance is terminated anyway
PUBLIC_IPV4_PER_HOUR = 0.005
# The test never connects: its group admits SSH from TEST-NET-1 only (RFC 5737, an
# address no one has), so the laptop's address need not be known.
NOBODY = "192.0.2.1/32"
SELF_STOP = "Client.InstanceInitiatedShutdown"

Say = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class Plan:
    region: str
    instance_type: str
    per_hour: float
    price_source: str
    image: Image
    disk_gb: int
    disk_per_hour: float
    deadline_minutes: float = DEADLINE_MINUTES
    leftovers: tuple[str, ...] = ()

    @property
    def max_cost(self) -> float:
        """The most it can cost: everything billed until the client's deadline."""
        return (self.per_hour + self.disk_per_hour + PUBLIC_IPV4_PER_HOUR) * (
            self.deadline_minutes / 60)

    def lines(self) -> list[str]:
        out = [
            f"launches one {self.instance_type} (${self.per_hour:.4f}/h, {self.price_source}) "
            f"in {self.region} from {self.image.name} ({self.image.id}), "
            f"{self.disk_gb} GB disk, no GPU, no setup",
            f"its guard: stop after {IDLE_MINUTES} minute idle, and after "
            f"{MAX_HOURS * 60:.0f} minutes up whatever happens",
            f"watches it run, the guard install and the stop; then removes the instance, its "
            f"disk, key pair and security group (the box '{SELFTEST_BOX}')",
            f"at most ${self.max_cost:.3f}: all of it billed for {_minutes(self.deadline_minutes)}, "
            "when this command terminates the instance whatever it has seen",
            "if this machine dies meanwhile, the instance stops itself within 15 minutes; its "
            f"disk (${self.disk_per_hour * 24:.3f}/day) stays until `gpubox selftest --clean`",
        ]
        if self.leftovers:
            out.insert(0, "first removes what an earlier selftest left: "
                       + ", ".join(self.leftovers))
        return out


def _minutes(value: float) -> str:
    return f"{value:g} minute{'' if value == 1 else 's'}"


def _price(settings: Settings, type_name: str, region: str) -> tuple[float, str]:
    from gpubox.providers.aws.prices import on_demand_price

    try:
        found = on_demand_price(settings, type_name, region)
    except GpuboxError:
        found = None
    if found is not None:
        return found.value, f"{found.source}, {found.date}"
    return CANDIDATES[type_name], "approximate us-east-1 list price"


def cheapest_type(settings: Settings, region: str) -> tuple[str, float, str]:
    """The cheapest of CANDIDATES offered in the region: (type, $/h, where the price is from)."""
    with aws_errors(f"checking which micro types {region} offers"):
        found = client(settings, "ec2", region).describe_instance_type_offerings(
            LocationType="region",
            Filters=[{"Name": "instance-type", "Values": list(CANDIDATES)}],
        )["InstanceTypeOfferings"]
    offered = [o["InstanceType"] for o in found if o["InstanceType"] in CANDIDATES]
    if not offered:
        raise NotFound(f"none of {', '.join(CANDIDATES)} is offered in {region}",
                       hint="pass another --region")
    priced = sorted((*_price(settings, t, region), t) for t in offered)
    per_hour, source, type_name = priced[0]
    return type_name, per_hour, source


def plan(settings: Settings, region: str, deadline_minutes: float = DEADLINE_MINUTES) -> Plan:
    """What the test will launch and the most it can cost; makes nothing."""
    from gpubox.providers.aws.catalog import storage_price_per_gb_month

    type_name, per_hour, source = cheapest_type(settings, region)
    image = resolve_image(settings, region, None, "x86_64")
    disk = max(8, image.root_size_gb or 8)
    return Plan(
        region=region, instance_type=type_name, per_hour=per_hour, price_source=source,
        image=image, disk_gb=disk,
        disk_per_hour=disk * storage_price_per_gb_month(region) / 730.0,
        deadline_minutes=deadline_minutes,
        leftovers=tuple(find_leftovers(settings, region)),
    )  # fmt: skip


# What a selftest left -------------------------------------------------------------------


def find_leftovers(settings: Settings, region: str) -> list[str]:
    """Everything tagged as the selftest's box in the region (a disk being deleted is
    gone), and its key file here."""
    ec2 = client(settings, "ec2", region)
    mine = [{"Name": f"tag:{BOX_TAG}", "Values": [SELFTEST_BOX]}]
    found = [f"instance {i['InstanceId']} ({i['State']['Name']})"
             for i in instances.find_instances(settings, region, SELFTEST_BOX)]
    with aws_errors(f"looking for what a selftest left in {region}"):
        found += [f"disk {v['VolumeId']}" for v in ec2.describe_volumes(Filters=mine)["Volumes"]
                  if v.get("State") not in ("deleting", "deleted")]
        found += [f"security group {g['GroupId']}"
                  for g in ec2.describe_security_groups(Filters=mine)["SecurityGroups"]]
        found += [f"key pair {k['KeyName']}"
                  for k in ec2.describe_key_pairs(Filters=mine)["KeyPairs"]]
    path = keypairs.key_path(settings, SELFTEST_BOX)
    if keypairs.key_file_present(path):
        found.append(f"key file {path}")
    return found


def clean(settings: Settings, region: str, say: Say = _quiet, delay: float = 5) -> list[str]:
    """Remove everything of the selftest's box in the region; what is still there after
    (empty when all is gone)."""
    ec2 = client(settings, "ec2", region)
    live = instances.find_instances(settings, region, SELFTEST_BOX)
    for inst in live:
        iid = inst["InstanceId"]
        inflight.made("instance", iid, region, note=f"box '{SELFTEST_BOX}'")
        if inst["State"]["Name"] != "shutting-down":
            say(f"terminating {iid}")
            inflight.step(f"terminating {iid}")
            with aws_errors(f"terminating {iid}"):
                ec2.terminate_instances(InstanceIds=[iid])
        instances.wait_for(settings, region, iid, "terminated", delay)
        inflight.gone("instance", iid)
    inflight.step(f"removing the security group and key pair of '{SELFTEST_BOX}'")
    for removed in network.remove_leftovers(settings, region, SELFTEST_BOX):
        say(f"removed {removed}")
    keypairs.remove_key_file(keypairs.key_path(settings, SELFTEST_BOX))
    for volume in _box_volumes(settings, region):  # the root disk normally goes with it
        with aws_errors(f"deleting disk {volume}"):
            try:
                ec2.delete_volume(VolumeId=volume)
                say(f"deleted disk {volume}")
            except Exception as exc:
                if not error_code(exc).startswith("InvalidVolume.NotFound"):
                    raise
    return find_leftovers(settings, region)


def _box_volumes(settings: Settings, region: str) -> list[str]:
    mine = [{"Name": f"tag:{BOX_TAG}", "Values": [SELFTEST_BOX]},
            {"Name": "status", "Values": ["available", "error"]}]
    with aws_errors(f"looking for the selftest's disks in {region}"):
        found = client(settings, "ec2", region).describe_volumes(Filters=mine)["Volumes"]
    return [v["VolumeId"] for v in found]


# The test ---------------------------------------------------------------------------------


@dataclass
class Outcome:
    region: str
    instance_type: str
    instance_id: str = ""
    started: float = 0.0  # epoch seconds, on this machine's clock
    running: float | None = None
    launch_time: float | None = None  # EC2's LaunchTime: the boot, on AWS's clock
    guard_seen: float | None = None  # when this command saw the guard's line
    guard_installed: float | None = None  # what the line says (the box's clock)
    stopped_seen: float | None = None
    stopped: float | None = None  # when EC2 says it stopped
    stopped_by_itself: bool = False
    stop_reason: str = ""
    ended: float | None = None
    left: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    per_hour: float = 0.0
    disk_per_hour: float = 0.0

    @property
    def passed(self) -> bool:
        return bool(self.guard_seen and self.stopped_by_itself and not self.left
                    and not self.problems)

    @property
    def boot_to_guard(self) -> float | None:
        """From EC2's launch time to the guard's own clock at its install (both synced to
        real time, unlike this laptop's; the laptop's look is the fallback)."""
        boot = self.launch_time or self.running
        if boot is None or self.guard_installed is None:
            return None
        return max(0.0, self.guard_installed - boot)

    @property
    def idle_to_stop(self) -> float | None:
        if self.guard_installed is None or self.stopped is None:
            return None
        return max(0.0, self.stopped - self.guard_installed)

    @property
    def cost(self) -> float:
        """What it cost: the instance and its address while it ran (AWS bills a minute at
        least), its disk until it was removed."""
        end = self.ended or time.time()
        ran_until = self.stopped or end
        run_hours = max(60.0, ran_until - (self.running or self.started)) / 3600
        disk_hours = max(0.0, end - self.started) / 3600
        return (self.per_hour + PUBLIC_IPV4_PER_HOUR) * run_hours + self.disk_per_hour * disk_hours

    def steps(self) -> list[tuple[str, str, str]]:
        """(step, seconds since the launch, note), for the report."""

        def at(t: float | None) -> str:
            return f"{t - self.started:.0f}s" if t is not None else "-"

        guard_note = ("its line on the console" if self.guard_seen else "never seen")
        stop_note = ("by itself (OS shutdown)" if self.stopped_by_itself
                     else self.stop_reason or "never")
        return [
            ("launched", "0s", f"{self.instance_type} {self.instance_id}"),
            ("running", at(self.running), ""),
            ("guard installed", at(self.guard_seen), guard_note),
            ("stopped", at(self.stopped_seen), stop_note),
            ("removed", at(self.ended), "nothing left" if not self.left else
             "left: " + ", ".join(self.left)),
        ]


def guard_time(console: str) -> float | None:
    """The epoch the guard's console line gives for its install; None without the line."""
    for line in console.splitlines():
        if GUARD_MARKER in line:
            found = re.search(r"\bat=(\d+)", line)
            return float(found.group(1)) if found else 0.0
    return None


def console_text(settings: Settings, region: str, instance_id: str, instance_type: str = "") -> str:
    # Latest=True: the console as it is now, not as at the last state change; EC2 offers
    # it on Nitro instances only (t3, t3a), not on Xen ones (t2).
    latest = {} if instance_type.startswith("t2.") else {"Latest": True}
    with aws_errors(f"reading the console of {instance_id}"):
        found = client(settings, "ec2", region).get_console_output(
            InstanceId=instance_id, **latest)
    output = found.get("Output") or ""
    if output and GUARD_MARKER not in output:  # the raw API form is base64
        try:
            output = base64.b64decode(output, validate=True).decode("utf-8", "replace")
        except (binascii.Error, ValueError):
            pass
    return output


def _launch(settings: Settings, test: Plan, say: Say, delay: float) -> dict[str, Any]:
    """The instance, made the way `up` makes a box (key pair, group, guard user data)."""
    identity = caller_identity(settings)
    owner = identity.get("Arn", "unknown")
    region = test.region
    key = keypairs.ensure_key_pair(settings, region, SELFTEST_BOX, owner)
    group = network.ensure_security_group(settings, region, SELFTEST_BOX, owner, NOBODY)
    # No type in the spec: it is checked as a GPU type there; the launch takes it apart.
    spec = BoxSpec(name=SELFTEST_BOX, provider="aws", region=region,
                   disk_gb=test.disk_gb, idle_stop_minutes=IDLE_MINUTES)
    ctx = instances.LaunchContext(
        settings=dataclasses.replace(settings, max_hours=MAX_HOURS, idle_stop_command=None,
                                     pre_stop=None),
        region=region, image=test.image, key_name=key.name, group_id=group.id, owner=owner,
        account=identity.get("Account", ""), generation=group.id, on_progress=say,
        wait_delay=delay,
    )  # fmt: skip
    return instances.launch_attempt(ctx, spec, test.instance_type, None)


def run(
    settings: Settings,
    test: Plan,
    say: Say = _quiet,
    poll_seconds: float = 5.0,
    clock: Callable[[], float] = time.time,
) -> Outcome:
    """Launch, watch, remove, check. Raises only when AWS cannot be asked at all; what
    the guard did or did not do is in the Outcome."""
    region = test.region
    inflight.begin(f"self-testing the guard in {region}",
                   undo=f"gpubox selftest --region {region} --clean --yes")
    if test.leftovers:
        say("removing what an earlier selftest left")
        still = clean(settings, region, say, poll_seconds)
        if still:
            raise GpuboxError(f"an earlier selftest's {', '.join(still)} could not be removed",
                              hint=f"try `gpubox selftest --region {region} --clean` again")
    out = Outcome(region, test.instance_type, started=clock(), per_hour=test.per_hour,
                  disk_per_hour=test.disk_per_hour)
    deadline = out.started + test.deadline_minutes * 60
    try:
        inst = _launch(settings, test, say, poll_seconds)
    except GpuboxError:  # no capacity, a quota, a denial: nothing of it is kept
        clean(settings, region, say, poll_seconds)
        raise
    out.instance_id = iid = inst["InstanceId"]
    out.running = clock()
    launched = inst.get("LaunchTime")
    out.launch_time = launched.timestamp() if hasattr(launched, "timestamp") else None
    inflight.made("instance", iid, region, test.per_hour,
                  f"box '{SELFTEST_BOX}', {test.instance_type}, running; its guard stops it "
                  f"within {MAX_HOURS * 60:.0f} minutes")  # fmt: skip
    inflight.step(f"watching {iid} (the guard stops it; the undo below removes it now)")
    say(f"{iid} is running; waiting for its guard's line on the console")
    while clock() < deadline:
        state = instances.describe(settings, region, iid)
        if out.guard_seen is None:
            installed = guard_time(console_text(settings, region, iid, test.instance_type))
            if installed is not None:
                out.guard_seen = clock()
                out.guard_installed = installed or out.guard_seen
                say(f"guard installed ({out.guard_seen - out.started:.0f}s after the launch); "
                    f"waiting for it to stop the idle instance")
        name = state["State"]["Name"]
        if name in ("stopped", "terminated", "shutting-down"):
            out.stopped_seen = clock()
            out.stopped = instances.transition_time(
                state.get("StateTransitionReason", "")) or out.stopped_seen
            reason = state.get("StateReason", {})
            out.stop_reason = reason.get("Message") or reason.get("Code") or name
            out.stopped_by_itself = name == "stopped" and reason.get("Code") == SELF_STOP
            if out.guard_seen is None:  # a console is refreshed at a stop: one last look
                installed = guard_time(console_text(settings, region, iid, test.instance_type))
                if installed is not None:
                    out.guard_seen, out.guard_installed = clock(), installed or clock()
            say(f"{iid} is {name}: {out.stop_reason}")
            break
        time.sleep(poll_seconds)
    else:
        out.problems.append(f"not stopped after {_minutes(test.deadline_minutes)}")
    if out.guard_seen is None:
        out.problems.append("the guard's line never showed on the console")
    if out.stopped_seen is not None and not out.stopped_by_itself:
        out.problems.append(f"it did not stop by itself ({out.stop_reason})")
    say("removing the instance, its disk, key pair and security group")
    out.left = clean(settings, region, say, poll_seconds)
    out.ended = clock()
    if not out.left:
        inflight.begin(f"self-testing the guard in {region}")  # nothing of it is left
    return out
