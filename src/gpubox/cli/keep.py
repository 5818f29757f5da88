"""`gpubox keep`: hold a box up against its idle auto-stop for a while."""

from __future__ import annotations

from typing import Annotated

import typer

from gpubox.cli import render
from gpubox.cli.app import app
from gpubox.cli.app import open_state as _state
from gpubox.cli.app import settings as load_settings


@app.command()
def keep(
    name: Annotated[str, typer.Argument(help="The box.")],
    duration: Annotated[
        str | None,
        typer.Argument(
            help="How long to keep it up whatever it does: 30m, 3h, 1d (at most 7d); `off` "
            "ends every keep. Leave out to see what keeps it now."
        ),
    ] = None,
) -> None:
    """Keep a box from stopping itself when idle, for a while; `off` ends it.

    The box bills all that time. On the box the same is `gpubox-keep 3h`, and
    `gpubox-keep -- python train.py` keeps it while that command runs.

    Example: gpubox keep box1 3h
    """
    from gpubox import box as lifecycle
    from gpubox.keep import keep_box, parse_keep
    from gpubox.remote import ssh as remote_ssh

    if duration is not None:
        parse_keep(duration)  # a bad duration is refused before connecting
    settings = load_settings()
    with _state(settings) as state:
        _, endpoint = lifecycle.endpoint_for(settings, state, name)
    runner = remote_ssh.runner_for(endpoint, settings, name)
    answer = keep_box(runner, duration)
    if duration is None:
        render.say(f"{name}: {answer.message}")
    elif answer.until:
        render.ok(f"{name}: {answer.message}")
        render.warn(f"'{name}' bills all that time; `gpubox keep {name} off` ends it sooner")
    else:
        render.ok(f"{name}: {answer.message}")
