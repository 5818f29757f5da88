"""`bench --types`: one new AWS box per type, in parallel, the suite on each, then all gone.

Money first: the plan says what the run costs at most (each type's $/h times the hard
cap) and nothing is launched without a yes. Every box this makes is terminated at the
end, after a failure, and on Ctrl-C or SIGTERM (a signal handler turns SIGTERM into
KeyboardInterrupt; a second Ctrl-C during the clean-up is ignored). Each box also
powers itself off at the cap (`shutdown -h +N` on the box), should this process die.

The suite step is injectable (`suite=`): tests run the AWS side against moto, where
a "box" has no host to measure.
"""

from __future__ import annotations

import concurrent.futures as cf
import signal
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gpubox import inflight
from gpubox.bench.suite import SUITE
from gpubox.errors import ConfirmationRequired, GpuboxError, InvalidInput
from gpubox.providers.base import Box, BoxSpec, BoxState, Progress

if TYPE_CHECKING:
    from collections.abc import Iterator

    from gpubox.config import Settings
    from gpubox.state import State

DEFAULT_CAP_MINUTES = 45
# (settings, state, box, quick, cap_minutes) -> the record to store (suite.record's form)
Suite = Callable[["Settings", "State", Box, bool, int], dict[str, Any]]


@dataclass(frozen=True)
class Plan:
    types: tuple[str, ...]
    region: str
    spot: bool
    cap_minutes: int
    names: dict[str, str]  # type -> box name
    prices: dict[str, float | None]  # type -> $/h

    @property
    def max_cost(self) -> float:
        """What the run can cost at most: every box billed for the whole cap."""
        return sum((p or 0.0) * self.cap_minutes / 60 for p in self.prices.values())

    @property
    def unpriced(self) -> list[str]:
        return [t for t, p in self.prices.items() if p is None]


@dataclass
class Outcome:
    records: dict[str, dict[str, Any]] = field(default_factory=dict)  # type -> record
    errors: dict[str, str] = field(default_factory=dict)  # type -> message
    terminated: list[str] = field(default_factory=list)  # box names


def box_name(type_name: str, taken: set[str]) -> str:
    base = "bench-" + type_name.replace(".", "-")
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}-{n}"
    return name


def make_plan(
    settings: Settings,
    state: State,
    types: list[str],
    *,
    region: str | None = None,
    spot: bool = False,
    cap_minutes: int = DEFAULT_CAP_MINUTES,
) -> Plan:
    """Check the types, price them, and pick box names no existing box has."""
    from gpubox.box import known_names
    from gpubox.providers.aws import catalog
    from gpubox.providers.aws.failover import configured_region
    from gpubox.providers.aws.session import default_region

    types = list(dict.fromkeys(t.strip() for t in types if t.strip()))
    if not types:
        raise InvalidInput("which instance types?", hint="e.g. --types g4dn.xlarge,g5.xlarge")
    if cap_minutes < 5:
        raise InvalidInput("a cap under 5 minutes leaves no time to measure",
                           hint="--max-minutes 45 (the default) is enough for the full suite")
    where = configured_region(settings, region) or default_region(settings)
    taken = set(known_names(settings, state))
    names, prices = {}, {}
    for t in types:
        catalog.gpu_type(settings, t, where)  # an unknown or GPU-less type fails here
        catalog.check_offered(settings, t, where)
        price = (catalog.spot_price if spot else catalog.on_demand_price)(settings, t, where)
        prices[t] = price.value if price else None
        names[t] = box_name(t, taken)
        taken.add(names[t])
    return Plan(tuple(types), where, spot, cap_minutes, names, prices)


def default_suite(settings: Settings, state: State, box: Box, quick: bool, cap: int) -> dict:
    """Reach the new box, cap its life, set up PyTorch, and run the suite on it."""
    from gpubox import setup as setup_mod
    from gpubox.bench.suite import record, run_suite
    from gpubox.cost import hourly_rate
    from gpubox.providers import get_provider
    from gpubox.remote import ssh as remote_ssh

    endpoint = get_provider("aws", settings).endpoint(box)
    remote_ssh.wait_until_reachable(endpoint, settings, box.name)
    runner = remote_ssh.runner_for(endpoint, settings, box.name)
    runner.run(f"sudo shutdown -h +{int(cap)} 'gpubox bench: time cap'", check=False)
    # The idle agent stops the box at the cap too (its shutdown behaviour keeps the disk).
    setup_mod.run_setup(runner, settings.with_overrides(idle_stop_minutes=int(cap)),
                        box_name=box.name, framework="pytorch", timeout=cap * 60, spot=box.spot)
    rate = hourly_rate(settings, box)
    return record(box, run_suite(runner, quick=quick), rate.value if rate else None)


@contextmanager
def _signals_raise() -> Iterator[None]:
    """SIGINT and SIGTERM raise inflight.Interrupted (main thread only): the CLI says what
    is left and exits 130 or 143, as for every other command."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise inflight.Interrupted(signum)

    old = {s: signal.signal(s, interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


@contextmanager
def _signals_ignored(say: Progress) -> Iterator[None]:
    """While boxes are being terminated, a second Ctrl-C must not leave one behind."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def hold(signum: int, frame: Any) -> None:
        say("still terminating the benchmark boxes; one moment")

    old = {s: signal.signal(s, hold) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


class TypeBench:
    """Runs a Plan: launch, measure, store, terminate."""

    def __init__(self, settings: Settings, *, suite: Suite = default_suite,
                 on_progress: Progress | None = None) -> None:
        self.settings = settings
        self.suite = suite
        self.say: Progress = on_progress or (lambda _m: None)
        self._cancel = threading.Event()

    def run(self, plan: Plan, *, quick: bool = False, yes: bool = False,
            confirm: Callable[[str], bool] | None = None) -> Outcome:
        check_consent(plan, yes=yes, confirm=confirm)
        from gpubox.providers.aws.session import remember_region
        from gpubox.state import State

        state = State(self.settings.state_path)
        remember_region(state, plan.region)  # so every later lookup finds these boxes
        outcome = Outcome()
        pool = cf.ThreadPoolExecutor(max_workers=len(plan.types), thread_name_prefix="bench")
        inflight.begin(f"benchmarking {', '.join(plan.types)}")
        try:
            with _signals_raise(), inflight.owning():
                futures = {pool.submit(self._one, plan, t, quick): t for t in plan.types}
                pending = set(futures)
                while pending:
                    done, pending = cf.wait(pending, timeout=0.5)
                    for fut in done:
                        t = futures[fut]
                        try:
                            rec = fut.result()
                        except GpuboxError as exc:
                            outcome.errors[t] = exc.message
                            self.say(f"{t}: {exc.message.splitlines()[0]}")
                        else:
                            if rec is not None:
                                outcome.records[t] = rec
        finally:
            self._cancel.set()
            with _signals_ignored(self.say):
                outcome.terminated += self._terminate_all(state, plan)
                pool.shutdown(wait=True, cancel_futures=True)
                outcome.terminated += self._terminate_all(state, plan)
                self._tell_what_is_left(plan)
                state.close()
        return outcome

    def _tell_what_is_left(self, plan: Plan) -> None:
        """The record an interruption prints: the boxes still there (none, normally) and
        the one command that removes them; never a box already terminated."""
        from gpubox.providers import get_provider

        rec = inflight.current()
        rec.things = {k: t for k, t in rec.things.items() if k[0] not in inflight.AWS_KINDS}
        prov = get_provider("aws", self.settings)
        left = []
        for name in plan.names.values():
            try:
                box = prov.find(name)
            except GpuboxError:
                continue
            if box is not None and box.state is not BoxState.TERMINATED:
                inflight.box(box)
                left.append(name)
        rec.undo = " && ".join(f"gpubox down {n} --yes" for n in left) or None

    def _one(self, plan: Plan, type_name: str, quick: bool) -> dict[str, Any] | None:
        from gpubox import box as lifecycle
        from gpubox.state import State

        if self._cancel.is_set():
            return None
        name = plan.names[type_name]
        state = State(self.settings.state_path)
        try:
            spec = BoxSpec(name=name, provider="aws", type=type_name, types=(type_name,),
                           region=plan.region, spot=plan.spot, ssh_from=self.settings.ssh_from,
                           idle_stop_minutes=plan.cap_minutes)
            self.say(f"launching {type_name} as '{name}'")
            box = lifecycle.up(self.settings, state, spec, setup=False).box
            if self._cancel.is_set():
                return None
            self.say(f"measuring {type_name}")
            rec = self.suite(self.settings, state, box, quick, plan.cap_minutes)
            state.save_bench(name, type_name, SUITE, rec)
            return rec
        finally:
            state.close()

    def _terminate_all(self, state: State, plan: Plan) -> list[str]:
        """Terminate every box of the plan that exists; the names of those terminated."""
        from gpubox.providers import get_provider
        from gpubox.remote.ssh_config import update_ssh_config

        prov = get_provider("aws", self.settings)
        gone = []
        for name in plan.names.values():
            try:
                box = prov.find(name)
                if box is None or box.state is BoxState.TERMINATED:
                    continue
                self.say(f"terminating '{name}' ({box.id})")
                prov.terminate(box)
            except GpuboxError as exc:  # keep going: the other boxes must go too
                self.say(f"could not terminate '{name}': {exc.message}; "
                         f"run `gpubox down {name} --yes`")
                continue
            state.run_stopped(name, time.time())
            state.forget(name)
            update_ssh_config(self.settings, name, None)
            gone.append(name)
        return gone


def check_consent(plan: Plan, *, yes: bool, confirm: Callable[[str], bool] | None) -> None:
    """Nothing is launched without a yes: --yes, or an answer to the cost question."""
    if yes:
        return
    if confirm is None or not confirm(describe_cost(plan) + " Launch them?"):
        raise ConfirmationRequired(
            "not launching anything: the benchmark boxes cost money",
            hint="run it in a terminal to answer, or pass --yes "
            f"(at most ${plan.max_cost:.2f} with a {plan.cap_minutes}-minute cap per box)",
        )


def describe_cost(plan: Plan) -> str:
    kind = "spot" if plan.spot else "on-demand"
    parts = [
        f"{t} ${p:.3f}/h" if p is not None else f"{t} (price unknown)"
        for t, p in plan.prices.items()
    ]
    text = (
        f"This launches {len(plan.types)} {kind} box(es) in {plan.region} ({', '.join(parts)}), "
        f"each terminated after the suite and capped at {plan.cap_minutes} minutes: "
        f"at most ${plan.max_cost:.2f} in all."
    )
    if plan.unpriced:
        text += f" No price known for {', '.join(plan.unpriced)}: not counted."
    return text
