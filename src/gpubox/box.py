"""The lifecycle of a box, whatever provider it lives on: up, status, stop, start, down.

Decides the order of steps and keeps the local journal so an interrupted `up` is found
again. Talks to providers only through the Provider protocol, and to hosts only through
a Runner. Everything the CLI does, a Python user can do with these functions.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from gpubox import inflight
from gpubox.errors import (
    ConfirmationRequired,
    GpuboxError,
    InvalidInput,
    NotFound,
    did_you_mean,
)
from gpubox.providers import PROVIDERS, get_provider
from gpubox.providers.base import Box, BoxSpec, BoxState, Progress, Provider, SshEndpoint

if TYPE_CHECKING:
    from gpubox.config import Settings
    from gpubox.state import State

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,38}$")
# A cached status younger than this is shown without asking the cloud.
STATUS_TTL_SECONDS = 30.0



def _quiet(_: str) -> None:
    pass


def _told(on_progress: Progress | None) -> Progress:
    """Progress that is also the step an interruption names ("interrupted while ...")."""

    def say(text: str) -> None:
        inflight.step(text)
        if on_progress is not None:
            on_progress(text)

    return say


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise InvalidInput(
            f"'{name}' is not a valid box name",
            hint="use lowercase letters, digits and '-', starting with a letter or digit, "
            "at most 39 characters (e.g. 'box1', 'd2l-gpu')",
        )
    return name


def provider(settings: Settings, name: str, on_progress: Progress | None = None) -> Provider:
    """The provider called `name`, reporting its progress (launch, host key ...) to on_progress."""
    return get_provider(name, settings, on_progress=on_progress)


def _cheap_providers() -> tuple[str, ...]:
    # Providers whose list() needs no network: their registry is a local file.
    return ("local", "ssh")


def _aws_in_use(state: State) -> bool:
    return bool(state.get("aws.regions"))


def known_names(settings: Settings, state: State) -> list[str]:
    names = {b.name for b in state.boxes()}
    for name in _cheap_providers():
        try:
            names.update(b.name for b in provider(settings, name).list())
        except GpuboxError:
            pass
    return sorted(names)


def find_box(
    settings: Settings, state: State, name: str, on_progress: Progress | None = None
) -> tuple[Provider, Box]:
    """The box called `name` and its provider, as the provider sees it now."""
    cached = state.box(name)
    order: list[str] = []
    if cached is not None:
        order.append(cached.provider)
    order += [p for p in _cheap_providers() if p not in order]
    if "aws" not in order and _aws_in_use(state):
        order.append("aws")
    for pname in order:
        prov = provider(settings, pname, on_progress)
        box = prov.find(name)
        if box is not None and box.state is not BoxState.TERMINATED:
            state.remember(box)
            return prov, box
    if cached is not None:
        state.forget(name)
    raise NotFound(
        f"no box called '{name}'",
        hint=did_you_mean(name, known_names(settings, state))
        or "`gpubox status` lists your boxes; `gpubox up NAME ...` makes one",
    )


def endpoint_for(settings: Settings, state: State, name: str) -> tuple[Box, SshEndpoint]:
    prov, box = find_box(settings, state, name)
    if box.state is not BoxState.RUNNING:
        raise GpuboxError(
            f"box '{name}' is {box.state.value}, not running",
            hint=f"start it with `gpubox start {name}`",
        )
    return box, prov.endpoint(box)


def infer_provider(spec_provider: str | None, *, host: str | None, aws_hint: bool) -> str:
    if spec_provider:
        if spec_provider not in PROVIDERS:
            raise InvalidInput(
                f"unknown provider '{spec_provider}'",
                hint=did_you_mean(spec_provider, PROVIDERS)
                or f"choose one of: {', '.join(PROVIDERS)}",
            )
        return spec_provider
    if host:
        return "ssh"
    if aws_hint:
        return "aws"
    raise InvalidInput(
        "say where the box should live",
        hint="--type g4dn.xlarge for AWS, --host USER@HOST for a host you reach over SSH, "
        "or --provider local for this machine",
    )


@dataclass(frozen=True)
class UpResult:
    box: Box
    created: bool
    started: bool
    setup: Any = None  # gpubox.setup.SetupResult when setup ran
    url: str | None = None
    message: str = ""


def up(
    settings: Settings,
    state: State,
    spec: BoxSpec,
    *,
    setup: bool = True,
    framework: str | None = None,
    browser: bool = False,
    local_port: int | None = None,
    on_progress: Progress | None = None,
    on_step: Callable[[Any], None] | None = None,
) -> UpResult:
    """Make the box (or find it and start it), then set it up and open Jupyter.

    Running it again for a box that exists is safe: it starts a stopped box, skips
    setup steps already done, and reuses a live tunnel. Never a second box.
    """
    check_name(spec.name)
    inflight.begin(f"bringing up '{spec.name}'", undo=f"gpubox down {spec.name}"
                   + (" --yes" if spec.provider == "aws" else ""))  # fmt: skip
    on_progress = _told(on_progress)
    say = on_progress
    cached = state.box(spec.name)
    if cached is not None and cached.provider != spec.provider:
        raise InvalidInput(
            f"box '{spec.name}' already exists on the {cached.provider} provider",
            hint=f"use another name, or `gpubox down {spec.name}` first",
        )
    prov = provider(settings, spec.provider, on_progress)
    state.journal(spec.name, "find")
    existing = prov.find(spec.name)
    created = started = False
    if existing is not None and existing.state is not BoxState.TERMINATED:
        box = existing
        inflight.box(box)
        if box.state in (BoxState.STOPPED, BoxState.STOPPING):
            say(f"box '{spec.name}' is {box.state.value}; starting it")
            state.journal(spec.name, "start")
            inflight.box(box, starting=True)
            box = prov.start(box)
            started = True
        elif box.state is BoxState.RUNNING:
            say(f"box '{spec.name}' is already running; nothing to launch")
    else:
        state.journal(spec.name, "launch", provider=spec.provider)
        box = prov.launch(spec)
        created = True
    inflight.box(box)
    state.remember(box)
    _record_run(state, box)
    state.journal(spec.name, "launched", id=box.id)
    if not setup:
        _refresh_ssh_config(settings, prov, box)
        state.journal(spec.name, "done", setup=False)
        return UpResult(box, created, started, message="setup skipped (--no-setup)")

    endpoint = prov.endpoint(box)
    _refresh_ssh_config(settings, prov, box, endpoint)
    from gpubox import jupyter
    from gpubox import setup as setup_mod
    from gpubox.remote import ssh as remote_ssh

    if not endpoint.local:
        say(f"waiting for SSH on {endpoint.host}:{endpoint.port}")
        remote_ssh.wait_until_reachable(endpoint, settings, spec.name, on_progress=say)
    runner = remote_ssh.runner_for(endpoint, settings, spec.name)
    state.journal(spec.name, "setup")
    result = setup_mod.run_setup(
        runner,
        settings.with_overrides(idle_stop_minutes=idle_limit_for(box, spec)),
        box_name=spec.name,
        framework=framework,
        on_event=on_step,
        spot=box.spot,
    )
    state.journal(spec.name, "jupyter")
    url = jupyter.open_jupyter(
        settings, state, box, endpoint, local_port=local_port, browser=browser
    )
    state.journal(spec.name, "done", url=url)
    return UpResult(box, created, started, setup=result, url=url)


def idle_limit_for(box: Box, spec: BoxSpec) -> int:
    """Minutes of idleness after which the box stops itself; 0 is off.

    Only boxes gpubox rents (AWS) stop themselves: shutting down this machine, or a
    host the user reaches over SSH and may share with others, is never gpubox's call.
    """
    if box.provider != "aws":
        return 0
    return spec.idle_stop_minutes or 0


def _record_run(state: State, box: Box) -> None:
    if box.state is BoxState.RUNNING:
        state.run_started(box.name, box.type, box.price_per_hour, box.launched_at or time.time())
    elif box.state in (BoxState.STOPPED, BoxState.TERMINATED):
        # The provider's time of the stop when it knows it (an idle stop at night is
        # noticed only at the next `status`), else now.
        stopped_at = box.get("stopped_at")
        state.run_stopped(box.name, float(stopped_at) if stopped_at else time.time())


def status(
    settings: Settings,
    state: State,
    name: str | None = None,
    *,
    refresh: bool | None = None,
    on_progress: Progress | None = None,
) -> list[Box]:
    """Every box gpubox made, as its provider sees it.

    refresh=None asks the providers only when the cache is older than STATUS_TTL_SECONDS;
    False never asks (instant); True always asks.
    """
    if name is not None:
        if refresh is False:
            cached = state.box(name)
            if cached is None:
                raise NotFound(
                    f"no box called '{name}'", hint=did_you_mean(name, known_names(settings, state))
                )
            return [cached]
        return [find_box(settings, state, name, on_progress)[1]]
    cached = state.boxes()
    if refresh is False:
        return cached
    if refresh is None and cached:
        newest = min((state.seen_at(b.name) or 0.0) for b in cached)
        if time.time() - newest < STATUS_TTL_SECONDS:
            return cached
    boxes: list[Box] = []
    pnames = list(_cheap_providers())
    if _aws_in_use(state) or any(b.provider == "aws" for b in cached):
        pnames.append("aws")
    for pname in pnames:
        boxes.extend(provider(settings, pname, on_progress).list())
    seen = {b.name for b in boxes}
    for box in boxes:
        state.remember(box)
        _record_run(state, box)
    for old in cached:
        if old.name not in seen:
            state.forget(old.name)
    return sorted(
        (b for b in boxes if b.state is not BoxState.TERMINATED), key=lambda b: b.name
    )


def stop(settings: Settings, state: State, name: str, on_progress: Progress | None = None) -> Box:
    inflight.begin(f"stopping '{name}'")
    on_progress = _told(on_progress)
    prov, box = find_box(settings, state, name, on_progress)
    inflight.box(box)
    if box.state is BoxState.STOPPED:
        return box
    from gpubox import jupyter

    jupyter.close_jupyter(settings, state, name)
    box = prov.stop(box)
    state.remember(box)
    _record_run(state, box)
    return box


def start(settings: Settings, state: State, name: str, on_progress: Progress | None = None) -> Box:
    inflight.begin(f"starting '{name}'", undo=f"gpubox stop {name}")
    on_progress = _told(on_progress)
    prov, box = find_box(settings, state, name, on_progress)
    inflight.box(box)
    if box.state is BoxState.RUNNING:
        return box
    inflight.box(box, starting=True)
    box = prov.start(box)
    state.remember(box)
    _record_run(state, box)
    _refresh_ssh_config(settings, prov, box)
    return box


def _refresh_ssh_config(
    settings: Settings, prov: Provider, box: Box, endpoint: SshEndpoint | None = None
) -> None:
    """Keep the box's entry in gpubox's ssh config current (its address may be new)."""
    from gpubox.remote.ssh_config import update_ssh_config

    try:
        update_ssh_config(settings, box.name, endpoint or prov.endpoint(box))
    except GpuboxError:
        pass  # `gpubox ssh-config` says what is wrong when asked


def what_down_deletes(box: Box) -> str:
    if box.provider == "aws":
        disk = f"{box.disk_gb} GB " if box.disk_gb else ""
        return (
            f"This terminates instance {box.id} ({box.type}, {box.region}) and DELETES its "
            f"{disk}root volume with everything on it: notebooks, data, installed packages. "
            "Its security group and key pair go too when nothing else uses them. "
            "Saved images (`gpubox images`) are kept."
        )
    return (
        f"gpubox forgets '{box.name}' ({box.id or 'this machine'}): its pinned host key, "
        "Jupyter token and tunnel. Nothing on the host is deleted."
    )


def _stop_host_services(settings: Settings, prov: Provider, box: Box, say: Progress) -> None:
    """A forgotten host keeps its files but not the Jupyter and agent gpubox started."""
    from gpubox import setup as setup_mod
    from gpubox.remote import ssh as remote_ssh

    try:
        endpoint = prov.endpoint(box)
        runner = remote_ssh.runner_for(endpoint, settings, box.name)
        if setup_mod.stop_services(runner):
            say("stopped Jupyter and the idle agent on the host; its files are kept")
    except GpuboxError as exc:
        say(f"could not reach the host to stop its Jupyter ({exc.message}); forgetting it anyway")


def down(
    settings: Settings,
    state: State,
    name: str,
    *,
    yes: bool = False,
    confirm: Callable[[str], bool] | None = None,
    on_progress: Progress | None = None,
) -> Box:
    """Terminate (AWS) or forget (ssh, local) a box, only with a clear yes for AWS.

    Run again after an interruption, it finishes the job: a box whose instance is gone
    but whose security group, key pair, key file or ssh config entry are left has those
    removed (they hold no data and bill nothing), instead of "no box called NAME"."""
    inflight.begin(f"taking '{name}' down")
    on_progress = _told(on_progress)
    try:
        prov, box = find_box(settings, state, name, on_progress)
    except NotFound:
        from gpubox import leftovers

        found = leftovers.find_by_key_file(settings, state, name, on_progress)
        if found is not None:
            prov, box = found
        elif left := leftovers.remove(settings, state, name, on_progress):
            return Box(name=name, provider="leftovers", state=BoxState.TERMINATED,
                       extra=(("removed", "; ".join(left)),))  # fmt: skip
        else:
            raise
    destructive = box.provider == "aws"
    if destructive and not yes:
        question = what_down_deletes(box) + " Terminate it?"
        if confirm is None or not confirm(question):
            raise ConfirmationRequired(
                f"not terminating '{name}': nothing was deleted",
                hint=f"run it in a terminal to answer the question, or pass --yes: "
                f"`gpubox down {name} --yes`",
            )
    inflight.box(box)
    if destructive:
        inflight.made("what goes with it", f"gpubox-{name}",
                      note="security group, key pair, key file, ssh config entry")  # fmt: skip
    from gpubox import jupyter

    jupyter.close_jupyter(settings, state, name)
    if not destructive:
        _stop_host_services(settings, prov, box, on_progress)
    prov.terminate(box)
    from gpubox.leftovers import forget_here

    try:
        forget_here(settings, state, name)
    except GpuboxError as exc:  # the box is gone; only a local file could not be changed
        done = "terminated" if destructive else "forgotten"
        raise GpuboxError(
            f"'{name}' is {done}, but {exc.message}",
            hint=f"{exc.hint}; then `gpubox down {name}` removes what is left here",
        ) from None
    return replace(box, state=BoxState.TERMINATED)
