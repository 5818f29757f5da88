"""Commands for the whole life of a box: doctor, up, status, stop, start, down."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path
from typing import Annotated

import typer

from gpubox.cli import render
from gpubox.cli.app import app
from gpubox.cli.app import open_state as _open_state
from gpubox.cli.app import settings as load_settings


@contextlib.contextmanager
def _progress(message: str):
    """A spinner whose text follows the library's progress messages."""
    console = render.err_console()
    with console.status(message) as status:

        def update(text: str) -> None:
            status.update(text)
            # A plain line above the spinner; console.log would add the time and this file.
            render.info(f"… {text}")

        yield update


def _step_line(event) -> None:
    status = getattr(event, "status", "")
    step = getattr(event, "step", "?")
    seconds = getattr(event, "seconds", None)
    msg = getattr(event, "msg", "") or ""
    if status == "start":
        return
    mark = {"done": "[green]✓[/]", "skip": "[dim]·[/]", "fail": "[red]✗[/]"}.get(status, "•")
    took = f" {float(seconds):.1f}s" if seconds not in (None, "") else ""
    if status == "fail":
        msg = ""  # the error that ends `up` says it, once
    from rich.markup import escape

    render.err_console().print(f"{mark} {escape(step):<11}{took:>7}  {escape(msg)}")


@app.command()
def doctor(
    live: Annotated[bool, typer.Option(
        help="Also ask AWS about every call gpubox makes (dry runs and reads: nothing is made).")] = False,
    region: Annotated[str | None, typer.Option(help="The AWS region --live asks (default: configured).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="--live: print the answers as JSON.")] = False,
    policy: Annotated[bool, typer.Option(
        help="Print the least-privilege IAM policy gpubox needs, and nothing else.")] = False,
    feature: Annotated[list[str] | None, typer.Option(
        help="--policy: only these features (core is always in): spot, prices, quotas, nodes, "
        "volumes, images, resize, gc. Repeat the flag for several.")] = None,
) -> None:
    """Check what gpubox needs here: AWS identity and region, the ssh client, files.

    Each missing piece is shown with its fix. AWS is only needed for --provider aws.
    --live asks AWS whether each call gpubox makes is allowed (docs/administrators.md).

    Example: gpubox doctor --live --region us-west-2
    """
    import shutil
    import subprocess

    from gpubox.cli import doctor_live

    if policy:
        doctor_live.policy(feature)
        return
    settings = load_settings()
    if region:
        settings = dataclasses.replace(settings, region=region)
    if live and as_json:
        raise typer.Exit(doctor_live.live(settings, region, as_json=True))
    rows: list[tuple[str, str, str]] = []
    ssh = shutil.which("ssh")
    if ssh:
        version = subprocess.run([ssh, "-V"], capture_output=True, text=True).stderr.strip()
        rows.append(("ssh client", f"ok: {version}", ""))
    else:
        rows.append(("ssh client", "missing", "install OpenSSH (apt-get install openssh-client)"))
    try:
        from gpubox.providers.aws.session import caller_identity

        ident = caller_identity(settings)
        rows.append(("AWS identity", f"ok: {ident.get('Arn', '?')}", ""))
    except ImportError:
        rows.append(("AWS identity", "unknown", "the AWS provider is not installed"))
    except Exception as exc:  # noqa: BLE001 - each check reports, none aborts the others
        hint = getattr(exc, "hint", None) or "run `aws configure` or set AWS_PROFILE"
        rows.append(("AWS identity", f"not usable: {exc}", hint))
    region = settings.region
    if region is None:
        try:
            import boto3

            region = boto3.session.Session(profile_name=settings.profile).region_name
        except Exception:  # noqa: BLE001
            region = None
    rows.append(
        (
            "AWS region",
            region or "none configured",
            "" if region else "gpubox picks the nearest region with your GPU type; "
            "or `gpubox config set region us-west-2`",
        )
    )
    keys = settings.keys_dir
    if keys.exists():
        loose = [p.name for p in keys.glob("*.pem") if p.stat().st_mode & 0o077]
        rows.append(
            (
                "key files",
                "loose permissions: " + ", ".join(loose) if loose else f"ok: {keys}",
                f"chmod 600 {keys}/*.pem" if loose else "",
            )
        )
    rows.append(("config file", str(settings.config_path), ""))
    render.table(["check", "result", "fix"], rows)
    if live:
        raise typer.Exit(doctor_live.live(settings, region, as_json=False))


@app.command()
def up(
    name: Annotated[str, typer.Argument(help="The box's name (lowercase letters, digits, '-').")],
    provider: Annotated[
        str | None,
        typer.Option(help="Where the box lives: aws, ssh or local. Inferred from --type/--host."),
    ] = None,
    type: Annotated[
        str | None,
        typer.Option(
            "--type",
            "-t",
            help="AWS instance type, or a comma list tried in order (g6.xlarge,g5.xlarge).",
        ),
    ] = None,
    region: Annotated[
        str | None,
        typer.Option(help="AWS region (default: config, AWS_REGION, else the nearest with the type)."),
    ] = None,
    disk: Annotated[int, typer.Option(help="Root disk size in GB (gp3, encrypted).", min=8)] = 64,
    image: Annotated[
        str | None,
        typer.Option(help="dlami (default), ubuntu, an ami-... id, or a saved image's name."),
    ] = None,
    spot: Annotated[bool, typer.Option(help="Launch a spot instance (stops, never deleted, on interruption).")] = False,
    max_price: Annotated[
        float | None, typer.Option(help="Highest spot price you accept, in $/h.")
    ] = None,
    price: Annotated[
        str | None,
        typer.Option(help="For an ssh or local box: what it costs you in $/h (0 = free), for "
                     "`status` and `bench compare`; change it later with `gpubox price`."),
    ] = None,
    any_region: Annotated[
        bool, typer.Option(help="On a capacity refusal, also try the next nearest regions.")
    ] = False,
    ssh_from: Annotated[
        str | None,
        typer.Option(help="CIDR allowed to reach SSH (default: your public address /32). Env: GPUBOX_SSH_FROM."),
    ] = None,
    host: Annotated[
        list[str] | None,
        typer.Option(help="For --provider ssh: USER@HOST[:PORT] you can ssh into; repeat it "
                     "for a box of several machines (node 0 first)."),
    ] = None,
    nodes: Annotated[
        int | None,
        typer.Option(help="Machines in the box (AWS: one cluster placement group; "
                     "see `gpubox run`). Default 1, or one per --host."),
    ] = None,
    key: Annotated[
        Path | None, typer.Option(help="For --provider ssh: the private key to log in with.")
    ] = None,
    framework: Annotated[
        str | None,
        typer.Option(help="pytorch (default), tensorflow, jax or mxnet. Env: GPUBOX_FRAMEWORK."),
    ] = None,
    idle_stop: Annotated[
        str | None,
        typer.Option(help="Stop the box after this long idle: 30m, 2h, or off (default 60m)."),
    ] = None,
    max_hours: Annotated[
        str | None,
        typer.Option(help="Also stop after this much uptime, busy or not: 8, 12h, or off (default off). Env: GPUBOX_MAX_HOURS."),
    ] = None,
    pre_stop: Annotated[
        str | None,
        typer.Option(help="Run this on the box before any stop, to save work: 'git -C ~/work push'. Env: GPUBOX_PRE_STOP."),
    ] = None,
    setup: Annotated[
        bool, typer.Option("--setup/--no-setup", help="Set the host up and open Jupyter.")
    ] = True,
    browser: Annotated[
        bool, typer.Option("--browser/--no-browser", help="Open Jupyter in the browser at the end.")
    ] = True,
    port: Annotated[
        int | None,
        typer.Option(help="Port on THIS machine for Jupyter's URL: the local end of the SSH "
                     "tunnel (default: a free one); a local box has no tunnel, so there it "
                     "is Jupyter's own port. The port on the box is the setting jupyter_port "
                     "(default 8888, or a free one when 8888 is taken)."),
    ] = None,
    forward: Annotated[
        list[str] | None,
        typer.Option(help="Also forward this port of the box (PORT or LOCAL:REMOTE), e.g. 6006 "
                     "for TensorBoard; repeat for more. See `gpubox forward`."),
    ] = None,
    yes: Annotated[
        bool,
        typer.Option("--yes", "-y", help="Go on without asking, e.g. for an --ssh-from wider "
                     "than 4096 addresses."),
    ] = False,
    volume: Annotated[
        str | None,
        typer.Option(
            help="AWS: a data volume NAME[:GiB] that outlives the box, mounted at ~/data "
            "(made once, encrypted gp3; grown when asked for more; see `gpubox volumes`)."
        ),
    ] = None,
    retry_until_up: Annotated[
        bool,
        typer.Option("--retry-until-up", help="When AWS has no capacity anywhere tried, keep trying."),
    ] = False,
    max_wait: Annotated[
        str, typer.Option(help="How long --retry-until-up keeps trying: 30m, 2h, 1h30m.")
    ] = "2h",
) -> None:
    """Make a box (or start the one of that name), set it up, and open Jupyter.

    Running it again is safe: an existing box is started if stopped, done setup steps
    are skipped, and never a second box is made.

    Example: gpubox up demo --provider local
    """
    from gpubox import box as lifecycle
    from gpubox import cluster
    from gpubox.providers.base import BoxSpec

    settings = load_settings().with_overrides(
        region=region, ssh_from=ssh_from, framework=framework
    )
    if provider is None and not (host or type or image or spot or region or max_price or volume):
        provider = _provider_of(settings, name)  # `gpubox up NAME` again: where it lives
    hosts = host or []
    host = hosts[0] if hosts else None
    count = cluster.check_node_count(nodes, hosts)
    types = tuple(t.strip() for t in type.split(",") if t.strip()) if type else ()
    pname = lifecycle.infer_provider(
        provider,
        host=host,
        aws_hint=bool(types or image or spot or region or max_price or volume is not None),
    )
    idle_minutes = settings.idle_stop_minutes
    if idle_stop is not None:
        from gpubox.idle import parse_idle_limit

        idle_minutes = parse_idle_limit(idle_stop)
    if max_hours is not None:
        from gpubox.idle import parse_max_hours

        settings = dataclasses.replace(settings, max_hours=parse_max_hours(max_hours))
    settings = settings.with_overrides(pre_stop=pre_stop)
    user = port_num = None
    host_name = host
    if host:
        user_host, _, port_text = host.rpartition(":") if host.count(":") == 1 else (host, "", "")
        user_host = user_host or host
        if port_text:
            if not port_text.isdigit():
                from gpubox.errors import InvalidInput

                raise InvalidInput(f"bad port in --host {host}", hint="use USER@HOST:PORT")
            port_num = int(port_text)
        user, _, host_name = user_host.rpartition("@")
        user = user or None
    from gpubox.validate import parse_price

    spec = BoxSpec(
        name=name,
        provider=pname,
        type=types[0] if types else None,
        types=types,
        region=settings.region,
        disk_gb=disk,
        image=image,
        spot=spot,
        max_price=max_price,
        ssh_from=settings.ssh_from,
        host=host_name,
        user=user,
        port=port_num,
        key_path=key.expanduser() if key else None,
        idle_stop_minutes=idle_minutes,
        any_region=any_region,
        volume=volume,
        price_per_hour=None if price is None else parse_price(price),
    )
    from gpubox.validate import check_port, confirm_ssh_from

    check_port(port)
    if pname == "aws":
        confirm_ssh_from(spec.ssh_from, yes=yes, confirm=render.confirm)
    lifecycle.refuse_volume(spec)
    from gpubox.capacity import Waiting, parse_max_wait

    waiting = Waiting(parse_max_wait(max_wait)) if retry_until_up else None
    if pname == "aws" and spec.type is None:
        existing = None
        with _open_state(settings) as state:
            existing = state.box(name)
        if existing is None:
            from gpubox.errors import InvalidInput

            raise InvalidInput(
                "which GPU instance type?", hint="pass --type (see `gpubox types` for prices)"
            )
    specs = cluster.node_specs(spec, count, hosts if len(hosts) > 1 else ())
    started = time.monotonic()
    with _open_state(settings) as state, _progress(f"bringing up '{name}'") as progress, \
            _say_if_billing(state, spec, settings):  # fmt: skip
        result = cluster.up(
            settings,
            state,
            specs,
            setup=setup,
            framework=settings.framework,
            browser=browser,
            local_port=port,
            on_progress=progress,
            on_step=_step_line,
            waiting=waiting,
        )
    took = time.monotonic() - started
    box = result.box
    where = box.type if box.provider == "aws" else (box.id or box.address or "this machine")
    verb = "made" if result.created else ("started" if result.started else "found")
    render.ok(f"{verb} box '{box.name}' ({box.provider}, {where}) in {took:.1f}s")
    if len(specs) > 1:
        render.say(f"{len(specs)} nodes: {', '.join(s.name for s in specs)}; "
                   f"run on all of them with: gpubox run {box.name} -- COMMAND")
        if box.provider == "aws":
            render.info(_nodes_guard_note(box.name, setup))
    if forward:
        _forward_after_up(settings, box.name, forward)
    _guard_notes(settings, spec, box, setup, result)
    if result.volume is not None:
        vol = result.volume.volume
        render.say(f"volume '{vol.name}': {vol.size_gb} GiB in {vol.zone}, about "
                   f"{render.money(vol.per_month, '/month')}; `gpubox down` keeps it")  # fmt: skip
    if not setup:
        render.say(f"connect with: gpubox ssh {box.name}")
        render.say(f"set it up with: gpubox up {box.name}")
        return
    if result.url:
        render.say(f"Jupyter: {result.url}")
    if box.provider == "aws":
        render.say(f"shell: gpubox ssh {box.name}    stop paying: gpubox stop {box.name}")
    else:
        render.say(f"shell: gpubox ssh {box.name}    close the tunnel: gpubox jupyter {box.name} --stop")


def _provider_of(settings, name: str) -> str | None:
    """The provider of the box called `name` as gpubox last saw it, if it knows one."""
    with _open_state(settings) as state:
        cached = state.box(name)
    return cached.provider if cached is not None else None


def _nodes_guard_note(name: str, setup: bool) -> str:
    if setup:
        return (f"idle guard: node 0 ('{name}') stops the box once every node has been idle "
                "for its limit; the other nodes report their use to it and follow it down "
                "(docs/multi-node.md)")
    return (f"idle guard: each node stops on its own idle limit (--no-setup); a node idle while "
            f"others work stops. `gpubox autostop {name} 1h` (or `gpubox up {name}` with setup) "
            "makes them one: the box stops when every node is idle")


def _forward_after_up(settings, name: str, specs: list[str]) -> None:
    """`up --forward 6006`: the same forwards as `gpubox forward NAME 6006`."""
    from gpubox import box as lifecycle
    from gpubox import forwards

    with _open_state(settings) as state:
        _, endpoint = lifecycle.endpoint_for(settings, state, name)
        for opened in forwards.open_forwards(settings, state, name, endpoint, specs):
            render.say(f"forward: {opened.describe()}")
@contextlib.contextmanager
def _say_if_billing(state, spec, settings):
    """An `up` that fails after the launch says the box bills, and what will stop it."""
    from gpubox.errors import GpuboxError
    from gpubox.guard import still_billing

    try:
        yield
    except GpuboxError as exc:
        step = state.last_step(spec.name)
        note = still_billing(step[0] if step else None, spec, settings.max_hours)
        if note:
            exc.message += "\n" + note
        raise


def _guard_notes(settings, spec, box, setup, result=None):
    """What guards the box: on AWS its guard from boot; elsewhere nothing until `autostop`."""
    from gpubox.guard import cloud_init_note
    from gpubox.idle import describe_hours, describe_limit

    events = getattr(getattr(result, "setup", None), "events", ()) or ()
    for event in events:
        if event.step == "agent" and "cannot stop this machine" in (event.msg or ""):
            render.error(f"'{box.name}' will NOT stop by itself: its guard cannot stop the machine",
                         hint="set idle_stop_command, or allow passwordless `sudo shutdown` "
                         "there; until then stop it yourself: gpubox stop " + box.name)  # fmt: skip

    if box.provider == "aws":
        if not setup and spec.idle_stop_minutes:
            cap = f" or {describe_hours(settings.max_hours)} up" if settings.max_hours else ""
            render.say(f"it stops itself after {describe_limit(spec.idle_stop_minutes)} idle{cap} "
                       "(its guard was installed at first boot)")  # fmt: skip
        note = cloud_init_note(spec.image)
        if note:
            render.warn(note)
    elif settings.max_hours or settings.pre_stop:
        render.warn(f"a {box.provider} box stops itself only after `gpubox autostop {box.name} "
                    "1h --max-hours H`; --max-hours and --pre-stop apply from then")  # fmt: skip


def _box_rows(boxes, failed=None):
    now = time.time()
    failed = failed or {}
    for b in boxes:
        uptime = render.duration(now - b.launched_at) if b.launched_at and b.state.value == "running" else ""
        cost = render.money(b.price_per_hour) if b.price_per_hour is not None else ""
        if b.provider != "aws" and b.price_per_hour == 0:
            cost = "free"  # the price its user gave it
        if b.provider == "aws" and b.state.value == "stopped" and b.disk_gb:
            # What a stopped box still costs: its disk, per month.
            cost = render.money(_disk_per_month(b)[0], "/mo disk")
        state = b.state.value + (" (spot interruption)" if b.get("interrupted") else "")
        if failed.get(b.name):  # the reason is printed under the table
            state += f" · setup {failed[b.name].split(':', 1)[0]}"
        shown = f"└ {b.name}" if b.get("node") not in (None, "0") else b.name  # a further node
        yield (shown, b.provider, state, b.type or "", b.region or "", b.address or "", uptime, cost)


@app.command("status")
def status_cmd(
    name: Annotated[str | None, typer.Argument(help="One box (default: all).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print a JSON list, one object per box.")] = False,
    refresh: Annotated[
        bool | None,
        typer.Option(
            "--refresh/--cached",
            help="Ask the cloud now / show the local cache only (default: ask when the cache is older than 30 s).",
        ),
    ] = None,
) -> None:
    """List your boxes with state, type, region, address, uptime and $/h.

    When AWS cannot be asked (offline, a misspelt AWS_PROFILE, keys AWS refuses), the
    boxes here and on your ssh hosts are still listed, with one warning line saying why
    the AWS boxes could not be listed; the exit code stays 0, so read that line.

    Example: gpubox status --json
    """
    from gpubox import cluster

    settings = load_settings()
    with _open_state(settings) as state:
        warnings: list[str] = []
        boxes = cluster.status(settings, state, name, refresh=refresh, warnings=warnings)
        # One box asked for by name: also what its idle agent says (one SSH command).
        idle = _idle_of(settings, state, boxes[0]) if name and refresh is not False else None
        failed = _setup_failures(state, boxes)
        open_forwards = _forwards_of(state, name) if name else []
        if idle is not None:
            from gpubox.idle import remember_failed_stop

            remember_failed_stop(state, boxes[0].name, idle)
    for line in warnings:
        render.warn(line)
    if json_out:
        rows = [b.to_dict() for b in boxes]
        if idle is not None:
            rows[0]["idle"] = dataclasses.asdict(idle)
        if open_forwards:
            rows[0]["forwards"] = [dataclasses.asdict(f) for f in open_forwards]
        for row in rows:
            if failed.get(row["name"]):
                row["setup"] = failed[row["name"]]
        render.print_json(rows)
        return
    if not boxes and warnings:  # AWS could not be asked: not "no boxes yet"
        render.info("no boxes on this machine or your ssh hosts")
        return
    if not boxes:
        render.info("no boxes yet; make one with `gpubox up NAME --provider local` (or --type, --host)")
        return
    render.table(["name", "provider", "state", "type", "region", "address", "up", "$"],
                 _box_rows(boxes, failed))
    for box_name, why in failed.items():
        render.error(f"{box_name}: setup {why}",
                     hint=f"`gpubox up {box_name}` tries again (done steps are skipped)")
    if idle is not None:
        render.guard_report(boxes[0].name, idle)
    else:
        _failed_stops(settings, boxes)
    for f in open_forwards:
        render.say(f"{boxes[0].name}: forward {f.describe()}")
    for b in boxes:
        if b.get("interrupted"):
            from gpubox.providers.aws.spot import Interruption

            render.warn(f"{b.name}: " + Interruption(action=b.get("interrupted")).describe(b.name))


def _setup_failures(state, boxes):
    """{name: 'failed at step jupyter: …'} of the boxes whose last setup failed."""
    from gpubox.setup import failure_of

    found = {b.name: failure_of(state, b.name) for b in boxes}
    return {name: why for name, why in found.items() if why}


def _failed_stops(settings, boxes):
    """A running box whose guard's last stop failed, as `status NAME` last saw it."""
    from gpubox.idle import failed_stop

    with _open_state(settings) as state:
        for b in boxes:
            said = failed_stop(state, b.name) if b.state.value == "running" else None
            if said:
                render.error(f"{b.name}: {said} (`gpubox status {b.name}` asks again)")


app.command("ls", help="Alias of `status`.\n\nExample: gpubox ls")(status_cmd)


def _forwards_of(state, name: str):
    from gpubox import forwards

    return forwards.live_forwards(state, name)


def _disk_per_month(box):
    """$ per month an AWS box's disk costs (running or stopped), and the rate used."""
    from gpubox.cost import disk_rate

    rate = disk_rate(box.region or "us-east-1")
    return (box.disk_gb or 0) * rate.value, rate


def _idle_of(settings, state, box):
    """The idle agent's view of a running box, or None when it cannot be had quickly."""
    if box.state.value != "running":
        return None
    from gpubox import box as lifecycle
    from gpubox.errors import GpuboxError
    from gpubox.idle import read_idle_status
    from gpubox.remote import ssh as remote_ssh

    try:
        _, endpoint = lifecycle.endpoint_for(settings, state, box.name)
        return read_idle_status(remote_ssh.runner_for(endpoint, settings, box.name))
    except GpuboxError:
        return None


@app.command()
def stop(name: Annotated[str, typer.Argument(help="The box to stop.")]) -> None:
    """Stop a box: compute billing stops, its disk is kept (and billed per GB-month).

    Example: gpubox stop box1
    """
    from gpubox import cluster

    settings = load_settings()
    with _open_state(settings) as state, _progress(f"stopping '{name}'") as progress:
        boxes = cluster.stop_all(settings, state, name, on_progress=progress)
    box = boxes[0]
    nodes = f" (all {len(boxes)} nodes)" if len(boxes) > 1 else ""
    render.ok(f"'{box.name}' is {box.state.value}{nodes}")
    disks = [b for b in boxes if b.provider == "aws" and b.disk_gb]
    if disks:
        per_month = sum(_disk_per_month(b)[0] for b in disks)
        rate = _disk_per_month(disks[0])[1]
        what = (f"its {box.disk_gb} GB disk" if len(disks) == 1 else
                f"the disks of its {len(disks)} nodes "
                f"({' + '.join(str(b.disk_gb) for b in disks)} GB)")
        for vol in _data_volumes_of(settings, disks):  # they bill while stopped too
            what += f" and data volume '{vol.name}' ({vol.size_gb} GiB)"
            per_month += vol.per_month
        render.say(
            f"still billed while stopped: {what}, about "
            f"{render.money(per_month, '/month')} ({rate.label()}); "
            f"`gpubox down {name}` deletes {'it' if len(disks) == 1 else 'them'}"
        )


def _data_volumes_of(settings, boxes):
    """The data volumes attached to these AWS boxes (one look per box; none if unknown)."""
    from gpubox import box as lifecycle
    from gpubox.errors import GpuboxError

    prov = lifecycle.provider(settings, "aws")
    found = []
    for b in boxes:
        try:
            found += prov.data_volumes(b)
        except GpuboxError:
            continue
    return found


@app.command()
def start(
    name: Annotated[str, typer.Argument(help="The box to start.")],
    wait: Annotated[
        bool, typer.Option("--wait", help="When AWS has no capacity, keep trying (with backoff).")
    ] = False,
    max_wait: Annotated[
        str, typer.Option(help="How long --wait keeps trying: 30m, 2h, 1h30m.")
    ] = "30m",
    type: Annotated[
        str | None,
        typer.Option("--type", "-t", help="Start it as another GPU type (a resize; files kept)."),
    ] = None,
    move: Annotated[
        bool,
        typer.Option(
            "--move",
            help="When its zone has no capacity, bring it up in another zone of its region "
            "(disk copied; the old instance is deleted only after a yes).",
        ),
    ] = False,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="With --move: delete the old instance without asking.")
    ] = False,
) -> None:
    """Start a stopped box again (billing resumes); its disk is as you left it.

    When AWS has no capacity for it: --wait, --type T or --move.

    Example: gpubox start box1 --wait --max-wait 1h
    """
    from gpubox import cluster
    from gpubox.capacity import Waiting, parse_max_wait

    waiting = Waiting(parse_max_wait(max_wait)) if wait else None
    if type:
        from gpubox.validate import check_type_name

        check_type_name(type)  # a typo is named before the box is looked for in AWS
    settings = load_settings()
    with _open_state(settings) as state, _progress(f"starting '{name}'") as progress:
        box = cluster.start(
            settings, state, name, on_progress=progress, waiting=waiting,
            instance_type=type, move=move, yes=yes, confirm=render.confirm,
        )  # fmt: skip
    render.ok(f"'{box.name}' is {box.state.value} at {box.address or box.id}")
    render.say(f"open Jupyter with: gpubox jupyter {name}")


@app.command()
def down(
    name: Annotated[str, typer.Argument(help="The box to terminate (AWS) or forget (ssh, local).")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask; for scripts.")] = False,
    delete_volume: Annotated[
        bool,
        typer.Option(
            "--delete-volume", help="Also delete its data volumes (kept by default), same yes."
        ),
    ] = False,
) -> None:
    """Terminate a box and delete its disk (AWS), or forget a host (ssh, local).

    Asks first and says what is deleted; without a terminal and without --yes it
    deletes nothing.

    Example: gpubox down box1
    """
    from gpubox import cluster

    settings = load_settings()
    with _open_state(settings) as state:
        if not yes and render.can_ask():
            _offer_work_first(settings, state, name)
            _offer_image_first(settings, state, name)
        with _progress(f"taking '{name}' down") as progress:
            box = cluster.down(
                settings, state, name, yes=yes, confirm=render.confirm, on_progress=progress,
                delete_volume=delete_volume,
            )
    if box.get("removed"):  # a half-deleted box: what an interrupted `down` left
        render.ok(f"removed what was left of '{name}': {box.get('removed')}")
        return
    verb = "terminated" if box.provider == "aws" else "forgot"
    nodes = (box.get("nodes") or "").split(", ")
    render.ok(f"{verb} '{name}'" + (f": all {len(nodes)} nodes ({', '.join(nodes)}) and what "
                                    "they shared" if len(nodes) > 1 else ""))


def _offer_image_first(settings, state, name: str) -> None:
    """Before an AWS box's disk is deleted, offer to keep it as an image (S16)."""
    from gpubox import box as lifecycle
    from gpubox.errors import NotFound

    try:
        _, box = lifecycle.find_box(settings, state, name)
    except NotFound:  # maybe a half-deleted box: `down` removes what is left
        return
    if box.provider != "aws" or box.get("cluster") not in (None, "", name):
        return  # a node's name: `down` refuses it and names the box
    image_name = f"{name}-final"
    if not render.confirm(
        f"Save an image of '{name}' as '{image_name}' first? (billed per GB-month of "
        "snapshots until `gpubox image rm`; `gpubox up NEW --image` brings it back)"
    ):
        return
    from gpubox.providers.aws.saved_images import create_saved_image

    with _progress(f"saving image '{image_name}'") as progress:
        created = create_saved_image(
            settings, box.region, name, image_name, stop_first=True, on_progress=progress
        )
    render.ok(f"saved image '{image_name}' ({created.image.image_id})")


def _offer_work_first(settings, state, name: str) -> None:
    """Before `down`, list the files changed on the box since setup and offer to copy
    them here (a box never set up, or one not running, is skipped)."""
    import os

    from gpubox import box as lifecycle
    from gpubox.errors import GpuboxError
    from gpubox.jupyter import has_token
    from gpubox.remote import work
    from gpubox.remote.transfer import Far

    if not has_token(settings, name):
        return  # never set up here: no notebooks of its own to save
    try:
        _, endpoint = lifecycle.endpoint_for(settings, state, name)
        if endpoint.local:
            return  # this machine: `down` deletes nothing of it
        far = Far(endpoint, settings, name)
        changed = work.changed_since_setup(far)
    except GpuboxError as exc:
        render.warn(f"could not list your work on '{name}': {exc.message}")
        return
    if not changed:
        return
    total = sum(f.size for f in changed)
    render.info(f"{len(changed)} file{'s' if len(changed) != 1 else ''} changed on '{name}' "
                f"since setup ({_size(total)}):")
    for f in changed[:15]:
        render.info(f"  {f.path}  ({_size(f.size)})")
    if len(changed) > 15:
        render.info(f"  … and {len(changed) - 15} more")
    target = os.path.join(os.getcwd(), f"{name}-work")
    if not render.confirm(f"Copy them to {target} here first?"):
        return
    with _progress(f"copying your work to {target}"):
        work.fetch_work(far, changed, target)
    render.ok(f"copied {len(changed)} files to {target}")


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
