"""Idle auto-stop, the client side: durations, and the agent on a box read and set through a Runner.

The agent itself (remote/agent/idle.py) runs on the box and needs no AWS credentials:
it shuts the OS down, and an AWS instance's shutdown behaviour "stop" keeps its disk.
"""

from __future__ import annotations

import json
import re
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpubox.errors import GpuboxError, InvalidInput

if TYPE_CHECKING:
    from gpubox.remote.runner import Runner

AGENT_DIR_ON_HOST = "~/.gpubox/agent"
AGENT_ON_HOST = f"{AGENT_DIR_ON_HOST}/idle.py"
MAX_MINUTES = 7 * 24 * 60
OFF_WORDS = ("off", "none", "never", "no")
_UNITS = {"m": 1, "min": 1, "h": 60, "d": 24 * 60}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(d|h|min|m)")

DURATION_HINT = "write it like 30m, 2h, 1h30m or 1d (a bare number is minutes), or off"


def parse_idle_limit(text: str | int | None) -> int | None:
    """'30m' -> 30, '2h' -> 120, '1h30m' -> 90, '45' -> 45, 'off' -> None (auto-stop off)."""
    if text is None:
        return None
    raw = str(text).strip().lower()
    if raw in OFF_WORDS:
        return None
    if raw.startswith("-"):
        raise InvalidInput(
            f"an idle limit of '{text}' is below zero",
            hint="give a limit such as 30m, or `off` to turn idle auto-stop off",
        )
    if re.fullmatch(r"\d+(\.\d+)?", raw):
        minutes = float(raw)
    else:
        compact = raw.replace(" ", "")
        parts = _PART.findall(compact)
        if not parts or "".join(n + u for n, u in parts) != compact:
            raise InvalidInput(f"'{text}' is not a duration", hint=DURATION_HINT)
        minutes = sum(float(n) * _UNITS[u] for n, u in parts)
    if minutes <= 0:
        raise InvalidInput(
            f"an idle limit of '{text}' would stop the box the moment it starts",
            hint="give a limit such as 30m, or `off` to turn idle auto-stop off",
        )
    if minutes < 1 or minutes != int(minutes):
        raise InvalidInput(f"'{text}' is not a whole number of minutes", hint=DURATION_HINT)
    if minutes > MAX_MINUTES:
        raise InvalidInput(
            f"an idle limit of '{text}' is more than a week",
            hint="use `off` if the box should never stop by itself (it then bills until you stop it)",
        )
    return int(minutes)


def parse_max_hours(text: str | float | None) -> float | None:
    """The uptime cap: '12' -> 12.0 hours, '90m' -> 1.5, '1d' -> 24.0, 'off' -> None (no cap)."""
    if text is None:
        return None
    raw = str(text).strip().lower()
    if raw in OFF_WORDS:
        return None
    hint = "give hours such as 8, 12h or 1d, or `off` for no cap on uptime"
    if raw.startswith("-"):
        raise InvalidInput(f"a cap of '{text}' hours is below zero", hint=hint)
    if re.fullmatch(r"\d+(\.\d+)?", raw):
        hours = float(raw)
    else:
        compact = raw.replace(" ", "")
        parts = _PART.findall(compact)
        if not parts or "".join(n + u for n, u in parts) != compact:
            raise InvalidInput(f"'{text}' is not a number of hours", hint=hint)
        hours = sum(float(n) * _UNITS[u] for n, u in parts) / 60
    if hours <= 0:
        raise InvalidInput(f"a cap of '{text}' would stop the box the moment it starts", hint=hint)
    if hours * 60 < 1:
        raise InvalidInput(f"a cap of '{text}' is under a minute", hint=hint)
    return round(hours, 4)


def describe_hours(hours: float | None) -> str:
    return "off" if hours is None else describe_limit(int(round(hours * 60)))


def describe_limit(minutes: int | None) -> str:
    if minutes is None:
        return "off"
    hours, rest = divmod(int(minutes), 60)
    if hours and rest:
        return f"{hours}h{rest:02d}m"
    return f"{hours}h" if hours else f"{rest}m"


@dataclass(frozen=True)
class IdleStatus:
    """The guard's view of one box, as the agent's `idle.py status` reports it."""

    enabled: bool
    limit_minutes: float | None
    idle_seconds: float | None
    busy: tuple[str, ...] = ()
    uncertain: tuple[str, ...] = ()
    mode: str | None = None
    last_stop_at: float | None = None
    last_stop_reason: str | None = None
    log_tail: tuple[str, ...] = ()
    max_hours: float | None = None
    uptime_seconds: float | None = None
    running: bool | None = None  # is the guard watching (its schedule, its last look)
    not_running_why: str = ""
    last_check: float | None = None
    last_stop_ok: bool | None = None
    stop_failed_at: float | None = None
    stop_failed_error: str | None = None
    can_stop: bool | None = None
    stop_command: str | None = None
    pre_stop_command: str | None = None
    pre_stop: dict[str, Any] | None = None
    now: float | None = None  # the box's clock when it answered
    peers: tuple[dict[str, Any], ...] = ()  # node 0 of several: the other nodes' reports
    report_error: str | None = None  # a node 1..: why its report to node 0 failed

    @classmethod
    def from_agent(cls, data: dict[str, Any]) -> IdleStatus:
        last_stop = data.get("last_stop") or {}
        failed = data.get("stop_failed") or {}
        health = data.get("health") or {}
        return cls(
            enabled=bool(data.get("enabled")),
            limit_minutes=data.get("idle_minutes") if data.get("enabled") else None,
            idle_seconds=data.get("idle_seconds"),
            busy=tuple(data.get("busy") or ()),
            uncertain=tuple(data.get("uncertain") or ()),
            mode=data.get("mode"),
            last_stop_at=last_stop.get("at"),
            last_stop_reason=last_stop.get("reason"),
            log_tail=tuple(data.get("log_tail") or ()),
            max_hours=data.get("max_hours"),
            uptime_seconds=data.get("uptime_seconds"),
            running=health.get("running"),
            not_running_why=health.get("why") or "",
            last_check=data.get("last_check"),
            last_stop_ok=last_stop.get("ok"),
            stop_failed_at=failed.get("at"),
            stop_failed_error=failed.get("error"),
            can_stop=data.get("can_stop"),
            stop_command=data.get("stop_command"),
            pre_stop_command=data.get("pre_stop_command"),
            pre_stop=data.get("pre_stop"),
            now=data.get("now"),
            peers=tuple(data.get("peers") or ()),
            report_error=data.get("report_error"),
        )

    def summary(self) -> str:
        """For a status column: 'idle 12m of 60m', 'busy (kernel 3f2a is busy)', 'off'."""
        cap = f"; stops after {describe_hours(self.max_hours)} up" if self.max_hours else ""
        if not self.enabled or self.limit_minutes is None:
            return "auto-stop off" + cap
        limit = describe_limit(int(self.limit_minutes)) if self.limit_minutes >= 1 else "<1m"
        if self.busy:
            return f"in use ({self.busy[0]}); stops after {limit} idle" + cap
        idle = describe_limit(int((self.idle_seconds or 0) // 60))
        return f"idle {idle} of {limit}" + cap

    @property
    def stop_failed(self) -> str | None:
        """'idle stop FAILED at T: reason' while the last stop failed, else None."""
        if self.stop_failed_at is None:
            return None
        return f"idle stop FAILED at {utc(self.stop_failed_at)}: {self.stop_failed_error}"

    def report(self) -> list[tuple[str, str]]:
        """(level, line) for `status NAME` and `autostop NAME`: is the guard watching, what
        it saw, the last stop and how it went. Levels: say, warn, error."""
        lines: list[tuple[str, str]] = []
        watching = self.enabled or bool(self.max_hours)
        if watching and self.running is False:
            lines.append(("error", f"the guard is NOT watching: {self.not_running_why}"))
        elif watching and self.running:
            ago = ""
            if self.last_check is not None and self.now is not None:
                ago = f", last look {describe_seconds(self.now - self.last_check)} ago"
            lines.append(("say", f"guard: watching ({self.mode}{ago})"))
        if self.busy:
            lines.append(("say", "in use: " + "; ".join(self.busy)))
        for peer in self.peers:
            ago = "" if self.now is None else f", reported {describe_seconds(self.now - peer['reported_at'])} ago"
            lines.append(("say", f"node {peer['node']}: idle {describe_seconds(peer['idle_seconds'])}{ago}"))
        for reason in self.uncertain:
            lines.append(("warn", f"unknown: {reason} (the limit counts double until it can be read)"))
        if self.report_error:
            lines.append(("warn", f"this node cannot tell node 0 its use ({self.report_error}); "
                          "node 0 counts it as unknown"))  # fmt: skip
        if watching and self.can_stop is False:
            lines.append(("error", f"the guard cannot stop this machine: `{self.stop_command}` "
                          "needs root or passwordless sudo; set idle_stop_command"))  # fmt: skip
        if self.stop_failed:
            lines.append(("error", self.stop_failed))
        elif self.last_stop_reason:
            lines.append(("say", f"last idle stop {utc(self.last_stop_at)}: {self.last_stop_reason}"))
        if self.pre_stop:
            pre = self.pre_stop
            how = "ran past its limit and was killed" if pre.get("timed_out") else f"exit {pre.get('exit_code')}"
            tail = " | ".join(pre.get("output_tail") or [])[-300:]
            level = "say" if pre.get("exit_code") == 0 else "warn"
            lines.append((level, f"pre_stop at {utc(pre.get('at'))}: {how}" + (f": {tail}" if tail else "")))
        return lines


def utc(epoch: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(epoch or 0))


def describe_seconds(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds}s" if seconds < 120 else describe_limit(seconds // 60)


def agent_files() -> list[Path]:
    """The agent's files in this package: what goes to ~/.gpubox/agent on a host."""
    from importlib import resources

    folder = resources.files("gpubox.remote") / "agent"
    return sorted(Path(str(f)) for f in folder.iterdir() if f.name.endswith(".py"))


def ensure_agent(runner: Runner) -> None:
    """Copy the agent's files to the host that are missing or differ from this gpubox's:
    one look at all of them (their SHA-256 on the host), then a copy of each that differs."""
    import hashlib

    files = agent_files()
    names = " ".join(shlex.quote(f.name) for f in files)
    looked = runner.run(f"cd {AGENT_DIR_ON_HOST} 2>/dev/null && sha256sum -- {names} 2>/dev/null; true",
                        check=False).stdout  # fmt: skip
    found = {}
    for line in looked.splitlines():
        digest, _, name = line.partition("  ")
        found[name.strip()] = digest.strip()
    for local in files:
        if found.get(local.name) != hashlib.sha256(local.read_bytes()).hexdigest():
            runner.put(local, f"{AGENT_DIR_ON_HOST}/{local.name}", mode=0o644)


def agent_json(
    runner: Runner,
    args: str,
    script: str = AGENT_ON_HOST,
    what: str = "the idle agent",
    hint: str = "`gpubox up NAME` installs it again",
) -> dict[str, Any]:
    """Run one of the agent's scripts on the box; the JSON its last line holds."""
    result = runner.run(f"python3 {script} {args}", check=False, timeout=60)
    if not result.ok:
        raise GpuboxError(
            f"{what} on the box failed ({result.exit_code}): "
            + (result.stderr or result.stdout).strip()[-300:],
            hint=hint,
        )
    last = (result.stdout.strip().splitlines() or ["{}"])[-1]
    return json.loads(last)


def read_idle_status(runner: Runner) -> IdleStatus | None:
    """The box's idle limit and idle time; None when the box has no agent (yet)."""
    if not runner.run(f"test -f {AGENT_ON_HOST}", check=False).ok:
        return None
    return IdleStatus.from_agent(agent_json(runner, "status"))


def set_idle_limit(
    runner: Runner,
    minutes: int | None,
    *,
    keep_limit: bool = False,
    max_hours: float | str | None = None,
    box_name: str | None = None,
    stop_command: str | None = None,
    pre_stop: str | None = None,
    pre_stop_minutes: int | None = None,
    follow: str | None = None,
    report_user: str | None = None,
    report_host_keys: list[str] | None = None,
    node: int | None = None,
) -> dict[str, Any]:
    """Set (or, with None, turn off) the idle limit on the box; what the agent answered:
    {"message", "mode", "enabled", "can_stop"}. keep_limit leaves the idle limit as it is;
    max_hours None leaves the cap as it is, "off" removes it. follow: node 0's HOST:PORT
    on a node 1.. of a box of several machines (it stays up while node 0 does);
    report_user and report_host_keys: how it reports its own use to node 0 (join_nodes)."""
    ensure_agent(runner)
    args = ["install"]
    if not keep_limit:
        args += ["--idle-minutes", "off" if minutes is None else str(int(minutes))]
    options = {"--max-hours": None if max_hours is None else f"{max_hours}",
               "--box-name": box_name, "--stop-command": stop_command, "--pre-stop": pre_stop,
               "--pre-stop-seconds": None if pre_stop_minutes is None else str(pre_stop_minutes * 60),
               "--follow": follow, "--report-user": report_user,
               "--node": None if node is None else str(node)}  # fmt: skip
    for flag, value in options.items():
        if value is not None:
            args += [flag, value]
    for key in report_host_keys or ():
        args += ["--report-host-key", key]
    return agent_json(runner, " ".join(shlex.quote(a) for a in args))


def join_nodes(head: Runner, others: list[tuple[int, Runner]], leader: str, head_user: str,
               head_keys: list[str]) -> None:
    """Make a box of several machines idle only when every node is: each node 1.. follows
    node 0 (`leader`, its sshd as they reach it) and reports its own use there after every
    check, with a key of its own that node 0 authorises for that report alone
    (remote/agent/idle_peers.py). Node 0's host key (`head_keys`, the laptop's pin) is
    pinned on each. Run again, it changes nothing that is right already."""
    if not head_keys:
        raise GpuboxError("node 0's host key is not pinned on this machine",
                          hint="reach node 0 once (`gpubox ssh NAME -- true`), then run this again")  # fmt: skip
    ensure_agent(head)
    for rank, runner in others:
        ensure_agent(runner)
        public = agent_json(runner, f"peer-key --node {int(rank)}")["public_key"]
        agent_json(head, f"peer-accept --node {int(rank)} --key {shlex.quote(public)}")
        set_idle_limit(runner, None, keep_limit=True, follow=leader, report_user=head_user,
                       report_host_keys=head_keys, node=rank)


def idle_log(runner: Runner, lines: int = 20) -> str:
    """The last lines of the agent's log on the box: each warning and stop with its reason."""
    result = runner.run(f"tail -n {int(lines)} ~/.gpubox/logs/idle.log 2>/dev/null", check=False)
    return result.stdout


FAILED_STOP_KEY = "guard-stop-failed:"


def remember_failed_stop(state: Any, name: str, status: IdleStatus) -> None:
    """Keep what the guard said about a failed stop, so `status` (all boxes, no SSH) shows it."""
    state.put(FAILED_STOP_KEY + name, status.stop_failed or "")


def failed_stop(state: Any, name: str) -> str | None:
    """The failed stop `status NAME` or `autostop NAME` last saw on the box, if any."""
    return state.get(FAILED_STOP_KEY + name) or None
