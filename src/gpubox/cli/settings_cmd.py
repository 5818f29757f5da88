"""`gpubox config`: show and change settings in the config file."""

from __future__ import annotations

from typing import Annotated

import typer

from gpubox.cli import render
from gpubox.cli.app import app
from gpubox.cli.app import settings as load_settings

config_app = typer.Typer(
    help="Show or change settings (file < GPUBOX_* environment < flags).", no_args_is_help=True
)
app.add_typer(config_app, name="config")


@config_app.command("show")
def show() -> None:
    """Show every setting and its current value.

    Example: gpubox config show
    """
    import dataclasses

    settings = load_settings()
    rows = [(f.name, str(getattr(settings, f.name))) for f in dataclasses.fields(settings)]
    render.table(["setting", "value"], rows, title=str(settings.config_path))


@config_app.command("set")
def set_(
    name: Annotated[str, typer.Argument(help="Setting name, e.g. region.")],
    value: Annotated[str, typer.Argument(help="New value.")],
) -> None:
    """Set one setting in the config file.

    Example: gpubox config set region us-west-2
    """
    from gpubox import config

    path = config.write_setting(load_settings(), name, value)
    render.ok(f"{name} = {value} ({path})")


@config_app.command("unset")
def unset(name: Annotated[str, typer.Argument(help="Setting name.")]) -> None:
    """Remove one setting from the config file (back to its default).

    Example: gpubox config unset region
    """
    from gpubox import config

    config.write_setting(load_settings(), name, None)
    render.ok(f"{name} is back to its default")


@config_app.command("path")
def path(which: Annotated[str | None, typer.Argument(help="config, data or cache.")] = None) -> None:
    """Print where gpubox keeps its files.

    Example: gpubox config path data
    """
    settings = load_settings()
    paths = {"config": settings.config_path, "data": settings.data_dir, "cache": settings.cache_dir}
    if which:
        render.say(str(paths.get(which, settings.config_path)))
    else:
        for key, value in paths.items():
            render.say(f"{key}: {value}")
