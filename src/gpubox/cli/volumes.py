"""Commands for what outlives or changes a box: volumes, volume rm, resize."""

from __future__ import annotations

import contextlib
from typing import Annotated

import typer

from gpubox.cli import render
from gpubox.cli.app import app
from gpubox.cli.app import settings as load_settings


@contextlib.contextmanager
def _aws(settings):
    """The AWS provider with its state (closed after), reporting progress as info lines."""
    from gpubox.providers.aws import AwsProvider
    from gpubox.state import State

    state = State(settings.state_path)
    try:
        yield AwsProvider(settings, on_progress=lambda t: render.info(f"… {t}"), state=state)
    finally:
        state.close()


@app.command("volumes")
def volumes_cmd(
    json_out: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
) -> None:
    """List your data volumes in every region: size, zone, the box they are attached to, $/month.

    A data volume (`gpubox up NAME --volume data:200`) outlives its boxes and is
    billed per GB-month until `gpubox volume rm NAME`. Every enabled region is asked
    (the `aws_regions` setting narrows that), so a new laptop sees them all.

    Example: gpubox volumes
    """
    from collections import Counter

    from gpubox.providers.aws.volumes import list_volumes

    settings = load_settings()
    with _aws(settings) as aws:
        found = list_volumes(settings, aws.search_regions(),
                             on_failure=lambda r, exc: render.warn(
                                 f"could not look in {r}: {exc.message}"))  # fmt: skip
    if json_out:
        render.print_json([v.to_dict() for v in found])
        return
    if not found:
        render.info("no data volumes; `gpubox up NAME --type ... --volume data:100` makes one")
        return
    rows = [(v.name, v.id, f"{v.size_gb} GiB", v.zone, v.state, v.box or "",
             render.money(v.per_month, "/month")) for v in found]  # fmt: skip
    render.table(["name", "id", "size", "zone", "state", "box", "$/month"], rows)
    total = sum(v.per_month for v in found)
    render.say(f"kept until removed: about {render.money(total, '/month')}; "
               "`gpubox volume rm NAME` deletes one")  # fmt: skip
    for name, count in sorted(Counter(v.name for v in found).items()):
        if count > 1:
            render.warn(f"{count} volumes are named '{name}' (made by two `up` at once); keep "
                        f"one: `gpubox volume rm {name} --id VOLUME-ID` deletes the other")  # fmt: skip


@app.command("volume")
def volume_cmd(
    action: Annotated[str, typer.Argument(help="What to do: rm (delete the volume).")],
    name: Annotated[str, typer.Argument(help="The volume's name (see `gpubox volumes`).")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Delete without asking.")] = False,
    volume_id: Annotated[
        str | None,
        typer.Option("--id", help="Which one, when several volumes have the name (vol-...)."),
    ] = None,
) -> None:
    """Delete a data volume and everything on it, after a yes: `gpubox volume rm NAME`.

    Without a terminal and without --yes it deletes nothing. The volume is looked for
    in every region. When two volumes have the name, --id says which one goes.

    Example: gpubox volume rm data
    """
    from gpubox.errors import ConfirmationRequired, InvalidInput, NotFound
    from gpubox.providers.aws import volumes

    if action != "rm":
        raise InvalidInput(f"unknown action '{action}'", hint=f"gpubox volume rm {name}")
    settings = load_settings()
    with _aws(settings) as aws:
        vol = volumes.find_volume(settings, aws.search_regions(), name, volume_id=volume_id)
        if vol is None:
            raise NotFound(f"no volume called '{name}'", hint="`gpubox volumes` lists them")
        what = (f"This DELETES volume '{vol.name}' ({vol.id}, {vol.size_gb} GiB, {vol.zone}) "
                f"and every file on it; it stops costing about "
                f"{render.money(vol.per_month, '/month')}.")  # fmt: skip
        if not yes and not render.confirm(what + " Delete it?"):
            raise ConfirmationRequired(
                f"not removing volume '{name}': nothing was deleted",
                hint=f"run it in a terminal to answer, or: gpubox volume rm {name} --yes"
                + (f" --id {volume_id}" if volume_id else ""),
            )
        volumes.delete_volume(settings, vol, aws.say, aws.wait_delay)
    render.ok(f"deleted volume '{name}' ({vol.id})")


@app.command()
def resize(
    name: Annotated[str, typer.Argument(help="The AWS box to resize.")],
    type: Annotated[
        str | None, typer.Option("--type", "-t", help="The new GPU instance type, e.g. g5.xlarge.")
    ] = None,
    disk: Annotated[
        int | None, typer.Option(help="Grow the root disk to this many GB (it never shrinks).")
    ] = None,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Stop a running box without asking.")
    ] = False,
) -> None:
    """Change a box's GPU type and/or grow its disk, keeping every file.

    Stops the box (a running one after a yes), changes it, starts it again and says
    the new $/h. The filesystem grows to the new disk as the box boots.

    Example: gpubox resize box1 --type g5.xlarge --disk 200
    """
    from gpubox import box as lifecycle
    from gpubox.cli.app import open_state as _open_state
    from gpubox.cli.lifecycle import _progress
    from gpubox.validate import check_type_name

    if type:
        check_type_name(type)  # a typo is named before the box is looked for in AWS
    settings = load_settings()
    with _open_state(settings) as state, _progress(f"resizing '{name}'") as progress:
        box, plan = lifecycle.resize(
            settings, state, name, instance_type=type, disk_gb=disk, yes=yes,
            confirm=render.confirm, on_progress=progress,
        )  # fmt: skip
    disk_text = f", disk {box.disk_gb} GB" if box.disk_gb else ""
    render.ok(f"'{name}' is {box.state.value} as {box.type}{disk_text}")
    if plan.per_hour is not None:
        render.say(f"now {render.money(plan.per_hour)} while it runs "
                   f"(was {plan.old_type}); `gpubox stop {name}` stops paying")  # fmt: skip
