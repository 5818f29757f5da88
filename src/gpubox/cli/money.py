"""Commands that keep the bill in sight and work safe: cost, image, images, gc, autostop,
price."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from gpubox.cli import render
from gpubox.cli.app import app
from gpubox.cli.app import open_state as _state
from gpubox.cli.app import settings as load_settings


def _say(text: str) -> None:
    render.info(f"… {text}")


def _regions(settings, state) -> list[str]:
    """The regions holding anything gpubox tagged: every enabled region (or the
    `aws_regions` setting) asked at once, not only those this laptop remembers."""
    from gpubox.providers.aws.inventory import regions_holding_things

    return regions_holding_things(settings, state)


@app.command()
def cost(
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the whole report as JSON.")
    ] = False,
    refresh: Annotated[
        bool | None,
        typer.Option("--refresh/--cached", help="Ask the cloud now / use the local cache only."),
    ] = None,
) -> None:
    """What each box costs per hour, what stopped disks and saved images cost per month,
    the spend so far since gpubox made each box, and the month so far.

    Prices carry their source and date; compute is counted from each box's run history.

    Example: gpubox cost --json
    """
    from gpubox import box as lifecycle
    from gpubox import cost as cost_mod

    settings = load_settings()
    with _state(settings) as state:
        boxes = lifecycle.status(settings, state, refresh=refresh)
        report = cost_mod.build_report(settings, state, boxes, time.time())
    if json_out:
        render.print_json(report.to_dict())
        return
    _show_report(report)


@app.command()
def images(
    json_out: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
) -> None:
    """List your saved images with their size and what they cost per month.

    Example: gpubox images
    """
    from gpubox.cost import snapshot_rate
    from gpubox.providers.aws.saved_images import list_saved_images

    settings = load_settings()
    with _state(settings) as state:
        regions = _regions(settings, state)
    found = list_saved_images(settings, regions) if regions else []
    if json_out:
        render.print_json([dict(i.__dict__) for i in found])
        return
    if not found:
        render.info("no saved images; make one with `gpubox image BOX --as NAME`")
        return
    rows = []
    for image in found:
        per_month = snapshot_rate(image.region).value * image.size_gb
        made = time.strftime("%Y-%m-%d", time.gmtime(image.created_at)) if image.created_at else ""
        rows.append((image.name, image.image_id, image.region, image.state, f"{image.size_gb} GB",
                     render.money(per_month, "/month"), image.box or "", made))  # fmt: skip
    render.table(["name", "id", "region", "state", "size", "$/month", "from box", "made"], rows)
    render.say(
        "`gpubox up NEW --image NAME` starts a box from one; `gpubox image rm NAME` deletes one"
    )


@app.command()
def image(
    name: Annotated[
        str, typer.Argument(help="The box to save as an image; or `rm` to remove one.")
    ],
    target: Annotated[
        str | None, typer.Argument(help="With `rm`: the image (name or ami- id) to remove.")
    ] = None,
    as_: Annotated[
        str | None,
        typer.Option("--as", help="The image's name (default: BOX-YYYYMMDD-HHMM)."),
    ] = None,
    stop: Annotated[
        bool,
        typer.Option(
            "--stop",
            help="Stop a running box first, so the image is consistent (it stays stopped).",
        ),
    ] = False,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="With `rm`: delete without asking.")
    ] = False,
) -> None:
    """Save a box as an image (an AMI) so new boxes start ready; or `image rm IMAGE` to delete one.

    `gpubox image BOX [--as NAME] [--stop]` makes the image and waits until it is
    available. `gpubox image rm NAME` deregisters it and deletes its snapshots, after a yes.

    Example: gpubox image box1 --as d2l-ready --stop
    """
    if name == "rm":
        if not target:
            from gpubox.errors import InvalidInput

            raise InvalidInput(
                "say which image to remove", hint="gpubox image rm NAME (see `gpubox images`)"
            )
        _remove_image(target, yes)
        return
    if target:
        from gpubox.errors import InvalidInput

        raise InvalidInput(
            f"unexpected '{target}' after the box name",
            hint=f"to name the image: gpubox image {name} --as {target}",
        )
    _create_image(name, as_, stop)


def _create_image(box_name: str, image_name: str | None, stop: bool) -> None:
    from gpubox import box as lifecycle
    from gpubox.cost import snapshot_rate
    from gpubox.errors import NotSupported
    from gpubox.providers.aws.saved_images import check_image_name, create_saved_image

    settings = load_settings()
    image_name = check_image_name(image_name or f"{box_name}-{time.strftime('%Y%m%d-%H%M')}")
    with _state(settings) as state:
        _, box = lifecycle.find_box(settings, state, box_name)
        if box.provider != "aws":
            raise NotSupported(
                f"'{box_name}' is a {box.provider} box; saved images are AWS machine images",
                hint="an image is made of an AWS box (`gpubox up NAME --type ...`)",
            )
        made = create_saved_image(
            settings, box.region or "", box_name, image_name, stop_first=stop, on_progress=_say
        )
        if made.stopped_box:
            state.run_stopped(box_name, time.time())
            lifecycle.status(settings, state, box_name, refresh=True)
    image = made.image
    per_month = snapshot_rate(image.region).value * image.size_gb
    render.ok(f"saved image '{image.name}' ({image.image_id}, {image.size_gb} GB, "
              f"about {render.money(per_month, '/month')} while kept)")  # fmt: skip
    if made.stopped_box:
        render.say(f"'{box_name}' is stopped; `gpubox start {box_name}` starts it again")
    elif not made.consistent:
        render.warn("imaged while running, without a reboot: files being written just then may "
                    "be incomplete; --stop makes a consistent image")  # fmt: skip
    render.say(f"start a box from it: gpubox up NEW --image {image.name}")


def _remove_image(wanted: str, yes: bool) -> None:
    from gpubox.cost import snapshot_rate
    from gpubox.errors import ConfirmationRequired
    from gpubox.providers.aws.saved_images import (
        boxes_using,
        find_saved_image,
        remove_saved_image,
    )

    settings = load_settings()
    with _state(settings) as state:
        regions = _regions(settings, state)
    image = find_saved_image(settings, regions, wanted)
    used_by = boxes_using(settings, image)
    per_month = snapshot_rate(image.region).value * image.size_gb
    what = (f"This deregisters image '{image.name}' ({image.image_id}, {image.region}) and "
            f"DELETES its snapshots ({', '.join(image.snapshot_ids) or 'none listed'}); "
            f"it stops costing about {render.money(per_month, '/month')}.")  # fmt: skip
    if used_by:
        what += (f" Boxes launched from it keep working: {', '.join(used_by)}; "
                 "they just cannot be made again from it.")  # fmt: skip
    if not yes and not render.confirm(what + " Delete it?"):
        raise ConfirmationRequired(
            f"not removing image '{image.name}': nothing was deleted",
            hint=f"run it in a terminal to answer, or: gpubox image rm {wanted} --yes",
        )
    removal = remove_saved_image(settings, image)
    if used_by:
        render.warn(
            f"image '{image.name}' was the source of: {', '.join(used_by)} (they keep running)"
        )
    if removal.deregistered:
        render.ok(
            f"deregistered {image.image_id}; deleted {len(removal.deleted_snapshots)} snapshot(s)"
        )
    for resource, why in removal.failed:
        render.error(
            f"could not delete {resource}: {why}", "delete it in the EC2 console, or `gpubox gc`"
        )
    if removal.failed:
        raise typer.Exit(1)


@app.command()
def gc(
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Remove what is found without asking.")
    ] = False,
    region: Annotated[
        str | None,
        typer.Option(
            help="Look in this region only (default: every enabled region, or the "
            "aws_regions setting)."
        ),
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print what was found as JSON; removes nothing.")
    ] = False,
) -> None:
    """Find what gpubox left in AWS that no box owns any more (volumes, snapshots, images,
    security groups, key pairs, addresses, second instances), show what each costs, and
    remove them after a yes. Untagged resources and saved images are never touched.

    Example: gpubox gc --yes
    """
    from gpubox.providers.aws import gc as gc_mod
    from gpubox.providers.aws.inventory import regions_holding_things, search_regions

    settings = load_settings()
    if region is not None:
        from gpubox.validate import check_region

        check_region(region, "from --region")
    with _state(settings) as state:
        searched = [region] if region else search_regions(settings, state)
        regions = [region] if region else regions_holding_things(settings, state, searched)
        aws_boxes = state.boxes("aws")
    keep = {b.name: b.id for b in aws_boxes}
    box_regions = {b.name: b.region for b in aws_boxes}
    plan = gc_mod.find_garbage(settings, regions, keep, box_regions, searched=searched)
    if json_out:
        render.print_json({"regions": list(plan.regions), "per_month": plan.per_month,
                           "garbage": [g.__dict__ for g in plan.garbage],
                           "kept_images": [g.__dict__ for g in plan.kept_images]})  # fmt: skip
        return
    _show_plan(plan)
    if not plan.garbage:
        return
    if not yes and not render.confirm(f"Remove these {len(plan.garbage)} things?"):
        render.info("nothing was removed; `gpubox gc --yes` removes them")
        return
    result = gc_mod.collect(settings, plan, on_progress=_say)
    render.ok(f"removed {len(result.removed)} of {len(plan.garbage)}")
    for item, why in result.failed:
        render.error(f"could not remove {item.kind} {item.id} ({item.region}): {why}")
    if result.failed:
        raise typer.Exit(1)


@app.command(context_settings={"ignore_unknown_options": True})  # "-1" is a bad price, not a flag
def price(
    name: Annotated[str, typer.Argument(help="The ssh or local box.")],
    dollars_per_hour: Annotated[
        str | None,
        typer.Argument(help="What it costs you per hour, e.g. 0.35 (0 = free). Leave out to see it."),
    ] = None,
) -> None:
    """Set (or show) what an ssh or local box costs you per hour.

    gpubox knows an AWS box's price; a host you rent elsewhere, or this machine, has the
    price you give it. `status` shows it and `bench compare` ranks the box by it beside
    cloud types ($ per million training images, $ per PFLOP). Kept until `gpubox down`.

    Example: gpubox price lab 0.35
    """
    from gpubox import box as lifecycle
    from gpubox.hostprice import set_price

    settings = load_settings()
    with _state(settings) as state:
        if dollars_per_hour is None:
            _, box = lifecycle.find_box(settings, state, name)
            if box.price_per_hour is None:
                render.say(f"'{name}' has no price: set one with `gpubox price {name} 0.35` "
                           "(0 = free)")
            elif box.price_per_hour == 0:
                render.say(f"'{name}' is free (price 0)")
            else:
                render.say(f"'{name}' costs {render.money(box.price_per_hour)}")
            return
        boxes = set_price(settings, state, name, dollars_per_hour)
    value = boxes[0].price_per_hour
    what = "is free (price 0)" if value == 0 else f"costs {render.money(value)}"
    nodes = f" for each of its {len(boxes)} machines" if len(boxes) > 1 else ""
    render.ok(f"'{name}' {what}{nodes}; see `gpubox bench compare`")


@app.command()
def autostop(
    name: Annotated[str, typer.Argument(help="The box.")],
    limit: Annotated[
        str | None,
        typer.Argument(
            help="Stop after this long idle: 30m, 2h, 1h30m, or off. Leave out to see it."
        ),
    ] = None,
    max_hours: Annotated[
        str | None,
        typer.Option(
            "--max-hours",
            help="Also stop after this much uptime, busy or not: 8, 12h, or off. Env: GPUBOX_MAX_HOURS.",
        ),
    ] = None,
) -> None:
    """Set (or show) how long a box may sit idle before it stops itself, and its uptime cap.

    Idle means: no cell computing, no Jupyter or SSH terminal in use, no process of yours
    using the CPU, GPUs under 5%, no `gpubox keep`. The box warns its users (in JupyterLab
    and on terminals) 5 minutes before it stops. What the stop runs is the setting
    idle_stop_command (default: power off); pre_stop runs first.

    Example: gpubox autostop box1 2h --max-hours 12
    """
    from gpubox import box as lifecycle
    from gpubox import cluster
    from gpubox.idle import (
        describe_hours,
        describe_limit,
        parse_idle_limit,
        parse_max_hours,
        read_idle_status,
        remember_failed_stop,
        set_idle_limit,
    )
    from gpubox.remote import ssh as remote_ssh

    minutes = parse_idle_limit(limit) if limit is not None else None
    cap = parse_max_hours(max_hours) if max_hours is not None else None
    settings = load_settings()
    with _state(settings) as state:
        box, endpoint = lifecycle.endpoint_for(settings, state, name)
        nodes = cluster.nodes_of(settings, state, name) if box.get("cluster") else []
    runner = remote_ssh.runner_for(endpoint, settings, name)
    if limit is not None or max_hours is not None:
        how = dict(keep_limit=limit is None, max_hours=None if max_hours is None else (cap or "off"),
                   box_name=name, stop_command=settings.idle_stop_command,
                   pre_stop=settings.pre_stop,
                   pre_stop_minutes=settings.pre_stop_minutes if settings.pre_stop else None)  # fmt: skip
        answer = set_idle_limit(runner, minutes, **how)
        if len(nodes) > 1:  # every node the same limits; node 0 decides for all of them
            joined = [(nodes[0].rank, nodes[0].box, runner)]
            for node in nodes[1:]:
                other = remote_ssh.runner_for(node.provider.endpoint(node.box), settings,
                                              node.box.name)  # fmt: skip
                set_idle_limit(other, minutes, **how)
                joined.append((node.rank, node.box, other))
            cluster.join_guards(settings, joined)
            render.say(f"its {len(nodes)} nodes are one box: node 0 stops it when every node "
                       "has been idle that long, and the others follow")  # fmt: skip
        message = str(answer.get("message", ""))
        if answer.get("can_stop") is False:
            render.error(f"{name}: {message}", hint="set idle_stop_command (`gpubox config set "
                         "idle_stop_command ...`), or allow passwordless `sudo shutdown` there")  # fmt: skip
            raise typer.Exit(1)
        render.ok(f"{name}: {message}")
        if limit is not None and minutes is None:
            render.warn(f"'{name}' now bills until you stop it: gpubox stop {name}")
        elif limit is not None:
            render.say(f"it stops itself after {describe_limit(minutes)} idle")
        if cap is not None:
            render.say(f"and after {describe_hours(cap)} of uptime, whatever it is doing")
        return
    status = read_idle_status(runner)
    if status is None:
        render.say(
            f"{name}: no idle agent on the box yet; `gpubox autostop {name} 60m` installs it"
        )
        return
    with _state(settings) as state:
        remember_failed_stop(state, name, status)
    render.guard_report(name, status)


def _show_report(report) -> None:
    rows = []
    for b in report.boxes:
        per_hour = (
            render.money(b.billing_now)
            if b.per_hour is not None and b.state.endswith("running")
            else ""
        )
        kept = render.money(b.storage_per_month, "/month") if b.storage_per_month else ""
        name = b.name if b.nodes == 1 else f"{b.name} ({b.nodes} nodes)"
        rows.append((name, b.state, per_hour, kept, f"{b.hours_run:.1f}",
                     render.money(b.spent, ""), render.money(b.month, "")))  # fmt: skip
    if rows:
        render.table(["box", "state", "$/h now", "$/month kept", "hours run", "$ so far",
                      "$ this month"], rows)  # fmt: skip
    if report.images:
        render.table(["image", "region", "size", "$/month", "$ so far", "$ this month"],
                     [(i.name, i.region, f"{i.size_gb} GB", render.money(i.per_month, "/month"),
                       render.money(i.spent, ""), render.money(i.month, "")) for i in report.images])  # fmt: skip
    if report.volumes:
        render.say(f"data volumes: {len(report.volumes)}, "
                   f"{sum(v.size_gb for v in report.volumes)} GiB, about "
                   f"{render.money(report.volumes_per_month, '/month')} (`gpubox volumes`)")  # fmt: skip
    render.say(f"running now: {render.money(report.running_per_hour)}   kept while stopped: "
               f"{render.money(report.kept_per_month, '/month')}   this month so far: "
               f"{render.money(report.month_so_far, '')}")  # fmt: skip
    sources = sorted({r.label() for b in report.boxes for r in (b.hourly_rate, b.storage_rate) if r}
                     | {i.rate.label() for i in report.images if i.rate})  # fmt: skip
    for label in sources:
        render.info(f"price: {label}")
    if any(b.address_per_hour for b in report.boxes):
        rate = max(n.address_per_hour for b in report.boxes for n in (b.node_costs or (b,)))
        render.info(f"price: public IPv4 address ${rate:g}/h while a box runs (AWS, since 2024-02)")
    if report.complete_from is not None:
        since = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(report.complete_from))
        render.warn(f"no local history before {since} (a new laptop, or lost state): the "
                    "figures are complete from then; AWS keeps no record of earlier runs")  # fmt: skip


def _show_plan(plan) -> None:
    if plan.garbage:
        render.table(["kind", "id", "region", "box", "why", "$/month"],
                     [(g.kind, g.id, g.region, g.box or "", g.why, render.money(g.per_month, "/month"))
                      for g in plan.garbage])  # fmt: skip
        render.say(f"left behind: {len(plan.garbage)} things costing about "
                   f"{render.money(plan.per_month, '/month')}")  # fmt: skip
    else:
        where = ", ".join(plan.regions) if len(plan.regions) <= 3 else f"{len(plan.regions)} regions"
        render.ok(f"nothing left behind in {where}")
    if plan.kept_images:
        total = sum(g.per_month for g in plan.kept_images)
        render.info(f"kept: {len(plan.kept_images)} saved image(s), about "
                    f"{render.money(total, '/month')}; `gpubox images` lists them")  # fmt: skip
