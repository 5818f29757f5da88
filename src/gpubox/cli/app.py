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


# Parameters that name something (a box, a volume, an image, a host, a setting): an empty
# one is refused while the command line is read, before any lookup or credentials check.
NAME_PARAMS = frozenset({"name", "as_", "volume", "volume_id", "image", "host"})


def command():
    """The click command of `app`, each name parameter refusing '' (and only spaces)."""
    import typer.main

    root = typer.main.get_command(app)
    stack = [root]
    while stack:
        cmd = stack.pop()
        stack.extend(getattr(cmd, "commands", {}).values())
        for param in cmd.params:
            if param.name in NAME_PARAMS:
                param.callback = _refusing_empty(param.callback)
    return root


def _refusing_empty(inner):
    def check(ctx, param, value):
        values = value if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(v, str) and not v.strip() for v in values):
            from gpubox.errors import InvalidInput

            shown = (param.opts[0] if param.param_type_name == "option"
                     else param.human_readable_name.upper())  # fmt: skip
            words, here = [], ctx
            while here.parent is not None:  # "config set", without the program's name
                words.insert(0, here.info_name)
                here = here.parent
            raise InvalidInput(
                f"{shown} is empty: it must name something",
                hint=f"see `gpubox {' '.join(words)} --help`",
            )
        return inner(ctx, param, value) if inner is not None else value

    return check

