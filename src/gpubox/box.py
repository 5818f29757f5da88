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
    refuse_node,
)
from gpubox.providers import PROVIDERS, get_provider
from gpubox.providers.base import Box, BoxSpec, BoxState, Progress, Provider, SshEndpoint

if TYPE_CHECKING:
    from gpubox.config import Settings
    from gpubox.state import State

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,38}$")
# A cached status younger than this is shown without asking the cloud.
STATUS_TTL_SECONDS = 30.0
LISTED_KEY = "status.listed_at"



def _quiet(_: str) -> None:
    pass


def _told(on_progress: Progress | None) -> Progress:
    """Progress that is also the step an interruption names ("interrupted while ...")."""

    def say(text: str) -> None:
        inflight.step(text)
        if on_progress is not None:
            on_progress(text)

    return say


def _setup_step_told(name: str, on_step: Callable[[Any], None] | None) -> Callable[[Any], None]:
    """Setup's step events, each also the step an interruption names."""

    def told(event: Any) -> None:
        status = getattr(event, "status", "")
        if status == "start":
            inflight.step(f"setting up '{name}', step {event.step} (a re-run skips the steps done)")
        elif status in ("done", "skip"):  # until the next step says it has started
            inflight.step(f"setting up '{name}', after step {event.step} (a re-run skips the "
                          "steps done)")
        if on_step is not None:
            on_step(event)

    return told


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


def _aws_in_use(state: State, settings: Settings | None = None) -> bool:
    """Whether AWS must be asked: gpubox used it from here, or credentials exist (a new
    laptop with the account's credentials must see the boxes made elsewhere)."""
    if state.get("aws.regions"):
        return True
    if settings is None:
        return False
    from gpubox.providers.aws.session import has_credentials

    return has_credentials(settings)


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
    if "aws" not in order and _aws_in_use(state, settings):
        order.append("aws")
    unasked: GpuboxError | None = None
    for pname in order:
        prov = provider(settings, pname, on_progress)
        try:
            box = prov.find(name)
        except NotFound:
            raise
        except GpuboxError as exc:
            if pname != "aws" or (cached is not None and cached.provider == "aws"):
                raise
            # AWS cannot be asked (offline, a proxy) about a name no other host knows.
            unasked = exc
            continue
        if box is not None and box.state is not BoxState.TERMINATED:
            state.remember(box)
            return prov, box
    if cached is not None:
        state.forget(name)
    hint = did_you_mean(name, known_names(settings, state)) or (
        "`gpubox status` lists your boxes; `gpubox up NAME ...` makes one"
    )
    if unasked is not None:
        hint = f"{hint}; AWS could not be asked ({unasked.message})"
    raise NotFound(f"no box called '{name}'", hint=hint)


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


def check_unchanged(box: Box, spec: BoxSpec) -> None:
    """`up` of a box that exists uses it as it is; asking it for another type or disk
    is an error that says what the box is and which command changes it."""
    asked = spec.types or ((spec.type,) if spec.type else ())
    wrong_type = bool(asked and box.type and box.type not in asked)
    # 64 GB is the default, so only a --disk the user chose can disagree.
    wrong_disk = spec.disk_gb != BoxSpec.disk_gb and box.disk_gb not in (None, spec.disk_gb)
    if not (wrong_type or wrong_disk):
        return
    what = box.type or box.provider
    if box.disk_gb:
        what += f" with a {box.disk_gb} GB disk"
    flags = (f" --type {asked[0]}" if wrong_type else "") + (
        f" --disk {spec.disk_gb}" if wrong_disk else ""
    )
    raise InvalidInput(
        f"box '{box.name}' already exists as a {what} ({box.state.value}); "
        f"`up` uses a box as it is and changes nothing",
        hint=f"change it with `gpubox resize {box.name}{flags}`, or run "
        f"`gpubox up {box.name}` to use it as it is",
    )


@dataclass(frozen=True)
class UpResult:
    box: Box
    created: bool
    started: bool
    setup: Any = None  # gpubox.setup.SetupResult when setup ran
    url: str | None = None
    message: str = ""
    volume: Any = None  # the data volume attached (AWS), when --volume asked for one


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
    waiting: Any = None,
) -> UpResult:
    """Make the box (or find it and start it), then set it up and open Jupyter.

    Running it again for a box that exists is safe: it starts a stopped box, skips
    setup steps already done, and reuses a live tunnel. Never a second box.
    """
    check_name(spec.name)
    refuse_volume(spec)
    if not inflight.nested():  # a node of a box of several: the box's record stays
        inflight.begin(f"bringing up '{spec.name}'", undo=f"gpubox down {spec.name}"
                       + (" --yes" if spec.provider == "aws" else ""),
                       box=spec.name if spec.provider == "aws" else None)  # fmt: skip
    on_progress = _told(on_progress)
    say = on_progress
    cached = state.box(spec.name)
    if cached is not None and cached.provider != spec.provider:
        raise InvalidInput(
            f"box '{spec.name}' already exists on the {cached.provider} provider",
            hint=f"use another name, or `gpubox down {spec.name}` first",
        )
    prov = provider(settings, spec.provider, on_progress)
    from gpubox.locks import box_lock, volume_lock

    # A second `up` of the name waits, then finds it; one of the same volume waits, then
    # finds it taken and stops before it launches (the volume is attached under the lock).
    with box_lock(settings, spec.name, say), volume_lock(settings, spec.volume, say):
        state.journal(spec.name, "find")
        existing = prov.find(spec.name)
        created = started = False
        owner = existing.get("cluster") if existing is not None else None
        if owner and owner != spec.name and spec.cluster is None:  # NAME is a node of it
            from gpubox.providers.aws import resources

            count = max(len(resources.scan(settings, state, owner).ranks), 1)
            raise refuse_node(spec.name, owner, int(existing.get("node") or 0), count, "up")
        if existing is not None and existing.state is not BoxState.TERMINATED:
            check_unchanged(existing, spec)
            box = existing
            if spec.volume is not None:  # a volume it cannot have stops it before a start
                prov.check_volume(spec.volume, box)  # type: ignore[attr-defined]
            inflight.box(box)
            if box.state in (BoxState.STOPPED, BoxState.STOPPING):
                say(f"box '{spec.name}' is {box.state.value}; starting it")
                _record_run(state, box)  # its last run ended at EC2's stop time
                state.journal(spec.name, "start")
                inflight.box(box, starting=True)
                box = _start_or_else(prov, box, waiting, False, False, None, say)
                started = True
            elif box.state is BoxState.RUNNING:
                say(f"box '{spec.name}' is already running; nothing to launch")
        else:
            state.journal(spec.name, "launch", provider=spec.provider)
            if waiting is not None:  # --retry-until-up
                from gpubox.capacity import retry_on_capacity

                box = retry_on_capacity(lambda: prov.launch(spec), waiting, say)
            else:
                box = prov.launch(spec)
            created = not getattr(prov, "launch_found", False)  # a racer's box is found, not made
        if spec.price_per_hour is not None and box.price_per_hour != spec.price_per_hour:
            box = prov.set_price(box, spec.price_per_hour)  # type: ignore[attr-defined]
        inflight.box(box)
        state.remember(box)
        _record_run(state, box)
        state.journal(spec.name, "launched", id=box.id)
        volume = None if spec.volume is None else _attach_volume(
            settings, state, prov, box, spec.volume, created, started, say)  # fmt: skip
    if not setup:
        _refresh_ssh_config(settings, prov, box)
        state.journal(spec.name, "done", setup=False)
        message = "setup skipped (--no-setup)"
        if volume is not None:
            message += f"; volume '{volume.volume.name}' is attached, not mounted (setup mounts it)"
        return UpResult(box, created, started, message=message, volume=volume)

    endpoint = prov.endpoint(box)
    _refresh_ssh_config(settings, prov, box, endpoint)
    from gpubox import jupyter
    from gpubox import setup as setup_mod
    from gpubox.remote import ssh as remote_ssh

    if not endpoint.local:
        waiting_for = f"waiting for SSH on {endpoint.host}:{endpoint.port}"
        say(waiting_for)

        def still_waiting(text: str) -> None:  # its retries are said; the step stays this
            say(text)
            inflight.step(waiting_for)

        remote_ssh.wait_until_reachable(endpoint, settings, spec.name, on_progress=still_waiting)
    runner = remote_ssh.runner_for(endpoint, settings, spec.name)
    if volume is not None:
        from gpubox.remote.data_volume import mount

        mounted = mount(runner, volume.volume.id, volume.volume.name)
        how = "new, formatted" if mounted.status == "formatted" else "its files kept"
        say(f"volume '{volume.volume.name}' mounted at {mounted.mount_dir} ({how})")
    state.journal(spec.name, "setup")
    inflight.step(f"setting up '{spec.name}' over SSH (a re-run skips the steps done)")
    if endpoint.local and local_port:  # no tunnel here: --port is Jupyter's own port
        settings = settings.with_overrides(jupyter_port=local_port)
    with setup_mod.failure_noted(state, spec.name):  # `status` says what failed
        result = setup_mod.run_setup(
            runner,
            guard_settings_for(settings, box, spec),
            box_name=spec.name,
            framework=framework,
            on_event=_setup_step_told(spec.name, on_step),
            spot=box.spot,
        )
        state.journal(spec.name, "jupyter")
        inflight.step(f"starting Jupyter on '{spec.name}' (its setup is done)")
        url = jupyter.open_jupyter(settings, state, box, endpoint, local_port=local_port,
                                   browser=browser, remote_port=result.jupyter_port)
    state.journal(spec.name, "done", url=url)
    return UpResult(box, created, started, setup=result, url=url, volume=volume)


def refuse_volume(spec: BoxSpec) -> None:
    """--volume is an AWS data disk; an ssh or local host keeps its files on its own disk.
    A malformed one (`--volume ''`, a bad name or size) stops here, before anything is made."""
    if spec.volume is None:
        return
    from gpubox.providers.aws.volumes import parse_request

    parse_request(spec.volume)
    if spec.provider != "aws":
        raise InvalidInput(
            f"--volume is for AWS boxes; a {spec.provider} host keeps its files on its own disk",
            hint="drop --volume: `gpubox down` only forgets an ssh or local host, its files stay",
        )


def _attach_volume(
    settings: Settings, state: State, prov: Provider, box: Box, request: str,
    created: bool, started: bool, say: Progress,
) -> Any:  # fmt: skip
    """The data volume attached to the box. When it cannot be (another `up` took it
    between the check and the attach), the box goes back to what it was, all or none:
    one this command made is terminated (nothing of it bills), one it started is stopped
    again; one that was running stays, and the error says what it costs."""
    try:
        return prov.attach_volume(box, request)  # type: ignore[attr-defined]
    except GpuboxError as exc:
        undo = f"`gpubox down {box.name} --yes`"
        try:
            if created:
                say(f"terminating '{box.name}' ({box.id}): this command made it for the volume")
                prov.terminate(box)
                from gpubox.leftovers import forget_here

                forget_here(settings, state, box.name)
                left = f"box '{box.name}', made by this command, is terminated: nothing of it bills"
            elif started:
                say(f"stopping '{box.name}' again, as it was")
                prov.stop(box)
                left = f"box '{box.name}' is stopped again, as it was"
            else:
                per_hour = f" (${box.price_per_hour:.2f}/h)" if box.price_per_hour else ""
                left = (f"box '{box.name}' runs on without it{per_hour}: "
                        f"`gpubox stop {box.name}` stops paying")  # fmt: skip
        except GpuboxError as again:
            per_hour = f", ${box.price_per_hour:.2f}/h" if box.price_per_hour else ""
            left = (f"box '{box.name}' ({box.id}{per_hour}) is left running: {again.message}; "
                    f"{undo} removes it")  # fmt: skip
        raise GpuboxError(f"{exc.message}; {left}", hint=exc.hint) from exc


def idle_limit_for(box: Box, spec: BoxSpec) -> int:
    """Minutes of idleness after which the box stops itself; 0 is off.

    Only boxes gpubox rents (AWS) stop themselves: shutting down this machine, or a
    host the user reaches over SSH and may share with others, is never gpubox's call.
    """
    if box.provider != "aws":
        return 0
    return spec.idle_stop_minutes or 0


def guard_settings_for(settings: Settings, box: Box, spec: BoxSpec) -> Settings:
    """The settings setup hands the idle agent: the box's limit; on a host gpubox does not
    rent, no limit and no uptime cap (they come with `gpubox autostop`)."""
    if box.provider != "aws":
        return replace(settings, idle_stop_minutes=0, max_hours=None)
    return settings.with_overrides(idle_stop_minutes=idle_limit_for(box, spec))


def _record_run(state: State, box: Box) -> None:
    if box.state is BoxState.RUNNING:
        runs = state.runs(box.name)
        # Never before the end of a run already closed (moto keeps the first LaunchTime
        # across a stop and start; EC2 gives the new one).
        ended = max((float(r["stopped_at"]) for r in runs if r["stopped_at"]), default=0.0)
        launched = max(box.launched_at or time.time(), ended)
        open_runs = [r for r in runs if r["stopped_at"] is None]
        if box.launched_at and open_runs and float(open_runs[-1]["started_at"]) < launched - 60:
            # It stopped and started again while gpubox was not looking (the console):
            # that run ended before this launch, at the latest.
            state.run_stopped(box.name, launched)
        state.run_started(box.name, box.type, box.price_per_hour, launched, box.get("cluster"))
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
    warnings: list[str] | None = None,
) -> list[Box]:
    """Every box gpubox made, as its provider sees it. What could not be asked is added
    to `warnings` (when given) instead of failing the whole listing.

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
    if refresh is None:
        # The last full listing, kept current by every command that changes a box.
        listed_at = float(state.get(LISTED_KEY) or 0.0)
        if time.time() - listed_at < STATUS_TTL_SECONDS:
            return cached
    boxes: list[Box] = []
    pnames = list(_cheap_providers())
    if any(b.provider == "aws" for b in cached) or _aws_in_use(state, settings):
        pnames.append("aws")
    unreachable: GpuboxError | None = None
    for pname in pnames:
        try:
            boxes.extend(provider(settings, pname, on_progress).list())
        except GpuboxError as exc:
            if pname != "aws":
                raise
            # AWS cannot be asked (offline, a proxy, an expired session): the boxes on
            # other hosts still answer, and the AWS ones are shown as last seen.
            unreachable = exc
            boxes.extend(b for b in cached if b.provider == "aws")
    if unreachable is not None and warnings is not None:
        from gpubox.providers.aws.session import unlisted_warning

        last_seen = sum(b.provider == "aws" and b.state is not BoxState.TERMINATED for b in cached)
        warnings.append(unlisted_warning(settings, unreachable, last_seen))
    seen = {b.name for b in boxes}
    for box in boxes:
        state.remember(box)
        _record_run(state, box)
    for old in cached:
        if old.name not in seen:
            state.forget(old.name)
    if unreachable is None:
        state.put(LISTED_KEY, repr(time.time()))
    return sorted(
        (b for b in boxes if b.state is not BoxState.TERMINATED), key=lambda b: b.name
    )


def stop(settings: Settings, state: State, name: str, on_progress: Progress | None = None) -> Box:
    if not inflight.nested():  # a node of a box of several: the box's record stays
        inflight.begin(f"stopping '{name}'")
    on_progress = _told(on_progress)
    prov, box = find_box(settings, state, name, on_progress)
    inflight.about(name if box.provider == "aws" else None)
    inflight.box(box)
    if box.state is BoxState.STOPPED:
        _record_run(state, box)  # stopped already (idle agent, console): at EC2's stop time
        return box
    from gpubox import forwards, jupyter

    jupyter.close_jupyter(settings, state, name)
    forwards.close_forwards(settings, state, name)
    box = prov.stop(box)
    state.remember(box)
    _record_run(state, box)
    return box


def start(
    settings: Settings,
    state: State,
    name: str,
    on_progress: Progress | None = None,
    *,
    waiting: Any = None,
    instance_type: str | None = None,
    move: bool = False,
    yes: bool = False,
    confirm: Callable[[str], bool] | None = None,
) -> Box:
    """Start a stopped box. When AWS has no capacity for it: `waiting` (capacity.Waiting)
    tries again with backoff; `instance_type` resizes it first; `move` brings it up in
    another zone (the old instance is deleted only after a yes)."""
    if not inflight.nested():  # a node of a box of several: the box's record stays
        inflight.begin(f"starting '{name}'", undo=f"gpubox stop {name}")
    on_progress = _told(on_progress)
    if instance_type and find_box(settings, state, name, on_progress)[1].type != instance_type:
        return resize(settings, state, name, instance_type=instance_type, yes=yes,
                      confirm=confirm, on_progress=on_progress)[0]  # fmt: skip
    prov, box = find_box(settings, state, name, on_progress)
    inflight.about(name if box.provider == "aws" else None)
    inflight.box(box)
    if box.state is BoxState.RUNNING:
        return box
    inflight.box(box, starting=True)
    _record_run(state, box)  # the last run ended at EC2's stop time, however it stopped
    box = _start_or_else(prov, box, waiting, move, yes, confirm, on_progress)
    state.remember(box)
    _record_run(state, box)
    _refresh_ssh_config(settings, prov, box)
    return box


def resize(
    settings: Settings,
    state: State,
    name: str,
    *,
    instance_type: str | None = None,
    disk_gb: int | None = None,
    yes: bool = False,
    confirm: Callable[[str], bool] | None = None,
    on_progress: Progress | None = None,
) -> tuple[Box, Any]:
    """Another type and/or a bigger disk for an AWS box: stop it (a running one only after
    a yes), change it, start it. Every check comes before anything changes."""
    from gpubox.errors import NotSupported

    prov, box = find_box(settings, state, name, on_progress)
    if box.get("cluster"):  # every node or none: one node alone would leave the others
        raise NotSupported(
            f"'{name}' is {'node ' + str(box.get('node')) + ' of ' if box.get('cluster') != name else ''}"
            f"box '{box.get('cluster')}' of several nodes; gpubox resizes a box of one "
            "machine: nothing was changed",
            hint=f"`gpubox down {box.get('cluster')} --yes`, then `gpubox up "
            f"{box.get('cluster')} --nodes N --type T` makes it anew at the new size",
        )
    if not hasattr(prov, "plan_resize"):
        raise NotSupported(
            f"'{name}' is a {box.provider} box; gpubox resizes the AWS boxes it rents",
            hint="a host you reach over SSH is the size it is",
        )
    plan = prov.plan_resize(box, instance_type, disk_gb)  # type: ignore[attr-defined]
    if box.state is BoxState.RUNNING and not yes:
        question = (f"Box '{name}' is running: resizing stops it (Jupyter and running "
                    "programs end; files are kept) and starts it again. Go ahead?")  # fmt: skip
        if confirm is None or not confirm(question):
            raise ConfirmationRequired(
                f"not resizing '{name}': it is running and nothing was changed",
                hint=f"answer in a terminal, or pass --yes: `gpubox resize {name} ... --yes`",
            )
    if box.state is not BoxState.STOPPED:
        box = stop(settings, state, name, on_progress)
    prov.apply_resize(plan)  # type: ignore[attr-defined]
    return start(settings, state, name, on_progress), plan


def _start_or_else(prov, box, waiting, move, yes, confirm, say: Progress) -> Box:
    from gpubox.capacity import retry_on_capacity
    from gpubox.errors import CapacityError, NotSupported

    if move:
        if not hasattr(prov, "move"):
            raise NotSupported(f"'{box.name}' is a {box.provider} box; only AWS boxes move")
        try:
            return prov.start(box)
        except CapacityError as exc:
            say(f"{exc.message}: moving it to another zone")
        return prov.move(box, yes=yes, confirm=confirm).box
    if waiting is not None:
        return retry_on_capacity(lambda: prov.start(box), waiting, say)
    return prov.start(box)


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


def volumes_sentence(data_volumes: list, delete_volume: bool) -> str:
    if not data_volumes:
        return ""
    names = ", ".join(f"'{v.name}' ({v.size_gb} GiB)" for v in data_volumes)
    if delete_volume:
        return f" It also DELETES data volume {names} (--delete-volume)."
    return f" Data volume {names} is kept (`gpubox volume rm` deletes it)."


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
    delete_volume: bool = False,
) -> Box:
    """Terminate (AWS) or forget (ssh, local) a box, only with a clear yes for AWS.
    Its data volumes are kept, unless delete_volume (covered by the same yes).

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
    data_volumes = prov.data_volumes(box) if hasattr(prov, "data_volumes") else []
    if destructive and not yes:
        question = what_down_deletes(box) + volumes_sentence(data_volumes, delete_volume)
        question += " Terminate it?"
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
    from gpubox import forwards, jupyter

    jupyter.close_jupyter(settings, state, name)
    forwards.close_forwards(settings, state, name)
    if not destructive:
        _stop_host_services(settings, prov, box, on_progress)
    prov.terminate(box)
    say = on_progress
    for vol in data_volumes:
        if delete_volume:
            prov.delete_data_volume(vol)  # type: ignore[attr-defined]
            say(f"deleted volume '{vol.name}' ({vol.size_gb} GiB)")
        else:
            say(f"kept volume '{vol.name}' ({vol.size_gb} GiB, {vol.zone}): about "
                f"${vol.per_month:.2f}/month until `gpubox volume rm {vol.name}`")  # fmt: skip
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
