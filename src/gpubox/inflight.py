"""What the running command has made or found so far, told when it is interrupted.

A command says what it does (`begin`), the code under it reports each resource it
makes or finds as it goes (`made`, `gone`), and when SIGINT or SIGTERM cuts it short
the CLI prints `lines()`: what exists now, what it costs per hour, and the one command
that finishes the job (or undoes it). One command per process, so the record is
process-wide; a Python user who never calls `begin` pays only a few dict writes.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from typing import Any


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived. A BaseException, like KeyboardInterrupt, so no
    `except Exception` swallows it; not a KeyboardInterrupt, so typer does not turn it
    into a silent exit before gpubox has said what exists."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # 130 for SIGINT, 143 for SIGTERM, as shells report them


@dataclass
class Thing:
    kind: str  # "instance", "key pair", "security group", "key file", "image", ...
    id: str
    region: str | None = None
    per_hour: float | None = None  # what it bills while it exists (None: nothing per hour)
    note: str = ""
    per_month: float | None = None  # what it bills per month while it exists (a disk)


@dataclass
class Record:
    action: str = ""  # "bringing up 'box1'"
    step: str = ""  # the last step begun, e.g. "launching g4dn.xlarge in us-east-1"
    finish: str | None = None  # the command that finishes the job
    undo: str | None = None  # the command that undoes it
    things: dict[tuple[str, str], Thing] = field(default_factory=dict)
    touched: bool = False  # something was made (and maybe removed again)
    # The AWS box the command works on (node 0's name): on an interruption the CLI tells
    # what that box owns in AWS at that moment (providers/aws/resources.py), not only
    # what this process saw.
    box: str | None = None


_record = Record()
_command: str | None = None  # the command line as typed: running it again finishes the job


def command(text: str | None) -> None:
    global _command
    _command = text


def begin(
    action: str, *, finish: str | None = None, undo: str | None = None, box: str | None = None
) -> None:
    """A command that changes things starts; by default its finish is running it again.
    `box`: the AWS box it acts on, whose parts the interruption report reads from AWS."""
    global _record
    _record = Record(action=action, finish=finish or _command, undo=undo, box=box)


def nested() -> bool:
    """Whether a command has begun that owns the record (a box of several nodes brings up
    each node with the one-box code, which must not start a record of its own; nor do
    the boxes `bench --types` brings up)."""
    return _nesting > 0


_nesting = 0


class owning:
    """`with inflight.owning():` the record begun just before stays the one told."""

    def __enter__(self) -> None:
        global _nesting
        _nesting += 1

    def __exit__(self, *_: object) -> None:
        global _nesting
        _nesting -= 1


def about(box_name: str | None) -> None:
    """The AWS box the running command turned out to act on (None: not an AWS box)."""
    if not nested():
        _record.box = box_name


def step(text: str) -> None:
    _record.step = text


def made(
    kind: str, id_: str, region: str | None = None, per_hour: float | None = None, note: str = "",
    per_month: float | None = None,
) -> None:
    """Something that exists now because of this command, or that it found and works on."""
    _record.things[(kind, id_)] = Thing(kind, id_, region, per_hour, note, per_month)
    _record.touched = True


def gone(kind: str, id_: str) -> None:
    _record.things.pop((kind, id_), None)


def box(found: Any, starting: bool = False) -> None:
    """A box this command found or made (a providers.base.Box), with what it bills now;
    `starting`: it is being started, so it bills from now on whatever its state says."""
    if found.provider == "aws" and found.id:
        bills = starting or found.state.bills_compute
        per_hour = found.price_per_hour if bills else None
        state = "starting" if starting else found.state.value
        made("instance", found.id, found.region, per_hour,
             f"box '{found.name}', {found.type}, {state}")  # fmt: skip
    else:
        made(f"{found.provider} box", found.name, note=found.id or "")


def current() -> Record:
    return _record


# What a box owns in AWS: told from AWS itself when it can be asked (`found`).
AWS_KINDS = ("instance", "security group", "key pair", "placement group", "image", "volume",
             "what goes with it")


def lines(record: Record | None = None, found: list[str] | None = None) -> list[str]:
    """What to tell the user about an interrupted command, one line each. `found`: the
    lines for what the box owns in AWS at this moment (they replace what this process
    saw of it; its own local files are still told)."""
    rec = record or _record
    out: list[str] = []
    if not rec.action and not rec.things:  # cut before the command began anything
        return ["nothing was made yet"] + ([f"finish it:  {_command}"] if _command else [])
    if found is not None:
        out += found
        # A data volume (or a move's snapshot) made but not attached yet is no part of the
        # box in AWS: told from what this process made (volumes.py reports them).
        told = "\n".join(found)
        loose = [t for t in rec.things.values()
                 if t.kind in ("volume", "snapshot") and t.id not in told]  # fmt: skip
        out += [f"  {t.kind} {t.id}" + (f" ({t.region})" if t.region else "")
                + (f": ${t.per_month:.2f}/month" if t.per_month else "")
                + (f" - {t.note}" if t.note else "") for t in loose]  # fmt: skip
        if sum(t.per_month or 0.0 for t in loose):
            out.append(f"and ${sum(t.per_month or 0.0 for t in loose):.2f}/month for "
                       f"{'it' if len(loose) == 1 else 'them'} while "
                       f"{'it exists' if len(loose) == 1 else 'they exist'}")  # fmt: skip
        here = [t for t in rec.things.values() if t.kind not in AWS_KINDS and t not in loose]
        out += [f"  here: {t.kind} {t.id}" + (f" - {t.note}" if t.note else "") for t in here]
        nothing = len(found) <= 1 and not here and not loose
        if "may exist" in rec.step:
            out.append("what it was making when interrupted may exist (and bill); "
                       "either command below finds it by its tag")  # fmt: skip
            nothing = False
        if rec.finish:
            out.append(f"finish it:  {rec.finish}")
        if rec.undo and not nothing:
            out.append(f"undo it:    {rec.undo}")
        elif rec.undo:
            out.append("nothing to undo: nothing of it is left")
        return out
    if rec.things:
        out.append("what exists now:")
        for thing in rec.things.values():
            where = f" ({thing.region})" if thing.region else ""
            cost = f": ${thing.per_hour:.3f}/h" if thing.per_hour else ""
            cost += f"{' +' if cost else ':'} ${thing.per_month:.2f}/month" if thing.per_month else ""
            note = f" - {thing.note}" if thing.note else ""
            out.append(f"  {thing.kind} {thing.id}{where}{cost}{note}")
        per_hour = sum(t.per_hour or 0.0 for t in rec.things.values())
        if per_hour:
            out.append(f"it costs ${per_hour:.2f}/h while it exists")
        elif "may exist" not in rec.step:
            out.append("none of it bills per hour")
    elif rec.action:
        out.append("nothing is left of what it made" if rec.touched else "nothing was made yet")
    if "may exist" in rec.step:
        out.append("what it was making when interrupted may exist (and bill); "
                   "either command below finds it by its tag")  # fmt: skip
    if rec.finish:
        out.append(f"finish it:  {rec.finish}")
    if rec.undo:
        out.append(f"undo it:    {rec.undo}")
    return [line for line in out if line]


def headline(exc: Interrupted, record: Record | None = None) -> str:
    rec = record or _record
    what = f" while {rec.step or rec.action}" if (rec.step or rec.action) else ""
    return f"interrupted by {exc}{what}"


def install_handlers() -> dict[int, object]:
    """SIGINT and SIGTERM raise Interrupted in the main thread, wherever it is.
    Returns the handlers there were, for `restore_handlers` (a no-op off the main thread)."""

    def handler(signum: int, _frame: object) -> None:
        raise Interrupted(signum)

    old: dict[int, object] = {}
    try:
        for signum in (signal.SIGINT, signal.SIGTERM):
            old[signum] = signal.signal(signum, handler)
    except ValueError:  # not the main thread: signals are not ours to take
        pass
    return old


def restore_handlers(old: dict[int, object]) -> None:
    for signum, handler in old.items():
        signal.signal(signum, handler)  # type: ignore[arg-type]


def ignore_signals() -> None:
    """While the interruption is told: a second Ctrl-C must not cut the message short."""
    try:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)
    except ValueError:
        pass
