"""The typer app every command module adds its commands to.

Command modules import nothing heavy at module level (no boto3, no jupyter):
`gpubox --help` imports all of them and must answer at once.
"""

from __future__ import annotations

import contextlib

import typer

app = typer.Typer(
    name="gpubox",
    help=(
        "Your own GPU deep-learning workstation: on AWS EC2, on any Linux host over SSH, "
        "or on this machine, with Jupyter through an SSH tunnel, and never a surprise bill."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode=None,
)


def settings():
    """The resolved settings (config file < environment); flags are applied by each command."""
    from gpubox import config

    return config.load()


@contextlib.contextmanager
def open_state(settings):
    """The local cache for one command, closed after it (every command module uses this)."""
    from gpubox.state import State

    state = State(settings.state_path)
    try:
        yield state
    finally:
        state.close()
