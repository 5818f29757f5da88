"""`gpubox selftest`: the guard proved on your own AWS account (gpubox/selftest.py)."""

from __future__ import annotations

import dataclasses
from typing import Annotated

import typer

from gpubox.cli import render
from gpubox.cli.app import app
from gpubox.cli.app import settings as load_settings


@app.command()
def selftest(
    region: Annotated[str | None, typer.Option(help="The AWS region to test in (default: configured).")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Launch (or remove) without asking.")] = False,
    clean: Annotated[bool, typer.Option(
        help="Only remove what an earlier selftest left in the region (interrupted, say).")] = False,
    poll_seconds: Annotated[float, typer.Option(
        help="Seconds between looks at the instance and its console.", min=0.01)] = 5.0,
    deadline_minutes: Annotated[float, typer.Option(
        help="Terminate the instance after this long whatever happened (its guard's own cap "
        "is 15 minutes up).", min=0.01)] = 20.0,
) -> None:
    """Prove on your AWS account, for about a cent, that a box's guard stops it.

    Launches the region's cheapest micro instance (no GPU) from the default image with
    the real guard at a one-minute idle limit, watches it run, the guard install and the
    stop by itself, then removes everything and checks by tag that nothing is left.
    Shows what it will launch and the most it can cost, and asks first.

    Example: gpubox selftest --region us-east-1
    """
    from gpubox import selftest as lib
    from gpubox.errors import ConfirmationRequired
    from gpubox.providers.aws.session import default_region

    settings = load_settings()
    if region:
        settings = dataclasses.replace(settings, region=region)
    where = region or default_region(settings)
    if clean:
        found = lib.find_leftovers(settings, where)
        if not found:
            render.ok(f"nothing of a selftest is left in {where}")
            return
        for line in found:
            render.info(f"  {line}")
        if not (yes or render.confirm(f"remove these from {where}?")):
            raise ConfirmationRequired("nothing was removed",
                                       hint=f"gpubox selftest --region {where} --clean --yes")
        left = lib.clean(settings, where, render.info, poll_seconds)
        if left:
            render.error("still there: " + ", ".join(left), "run it again in a minute")
            raise typer.Exit(1)
        render.ok(f"nothing of a selftest is left in {where}")
        return
    test = lib.plan(settings, where, deadline_minutes)
    for line in test.lines():
        render.info(line)
    if not (yes or render.confirm("launch it?")):
        raise ConfirmationRequired("nothing was launched",
                                   hint=f"gpubox selftest --region {where} --yes")
    outcome = lib.run(settings, test, render.info, poll_seconds)
    render.table(["step", "after", "note"], outcome.steps())
    boot = render_seconds(outcome.boot_to_guard)
    idle = render_seconds(outcome.idle_to_stop)
    render.say(f"boot to guard installed: {boot}; guard installed to stopped by itself: {idle}; "
               f"cost: about ${outcome.cost:.4f}")
    if outcome.passed:
        render.ok(f"the guard stopped an idle instance by itself in {where}; nothing is left")
        return
    render.error("selftest failed: " + "; ".join(outcome.problems + (
        [f"left: {', '.join(outcome.left)}"] if outcome.left else [])),
        "docs/administrators.md says what each step needs")
    raise typer.Exit(1)


def render_seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}s"
