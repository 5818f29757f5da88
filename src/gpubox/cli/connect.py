"""Reaching a box: `gpubox ssh`, `gpubox jupyter`, `gpubox ssh-config`.

Nothing heavy at module level: the library modules are imported inside each command.
"""

from __future__ import annotations

import typer

from gpubox.cli import render
from gpubox.cli.app import app
from gpubox.cli.app import settings as load_settings


def _state(settings):
    from gpubox.state import open_state

    return open_state(settings.state_path)


@app.command("ssh")
def ssh(
    name: str = typer.Argument(..., help="The box to connect to."),
    command: list[str] = typer.Argument(
        None, help="A command to run on the box instead of a shell (put it after --)."
    ),
    forget_host_key: bool = typer.Option(
        False,
        "--forget-host-key",
        help="Remove the box's pinned SSH host key (after a rebuild); the next connection "
        "trusts the key the host shows then, and prints its fingerprint.",
    ),
    forward_agent: bool = typer.Option(
        False,
        "--forward-agent",
        "-A",
        help="Forward this machine's SSH agent, so `git push` on the box uses your keys "
        "(the box's root can use the agent while you are connected). Setting: forward_agent.",
    ),
) -> None:
    """Open a shell on a box (or run one command) with its host key checked.

    Example: gpubox ssh box1 -- nvidia-smi
    """
    import os
    import sys

    from gpubox import box as lifecycle
    from gpubox.remote import hostkeys
    from gpubox.remote.ssh import ssh_argv

    settings = load_settings()
    if forget_host_key:
        removed = hostkeys.forget_host_key(settings, name)
        if not removed:
            render.info(f"no host key was pinned for '{name}'; nothing to forget")
            return
        prints = ", ".join(hostkeys.fingerprint(k) for k in removed)
        render.warn(
            f"forgot the host key pinned for '{name}' ({prints}). The next connection trusts "
            "whatever key the host shows then: do this only when you know why the key changed "
            "(the box was rebuilt or re-imaged)."
        )
        return
    state = _state(settings)
    try:
        _, endpoint = lifecycle.endpoint_for(settings, state, name)
    finally:
        state.close()
    text = " ".join(command) if command else None
    if not endpoint.local:
        hostkeys.ensure_host_key(endpoint, settings, name, on_message=render.info)
    argv = ssh_argv(endpoint, settings, name, command=text, tty=text is None or sys.stdin.isatty())
    if (forward_agent or settings.forward_agent) and not endpoint.local:
        argv[1:1] = _agent_options()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvp(argv[0], argv)


def _agent_options() -> list[str]:
    """`-A` on a connection of its own (ssh takes the first value of an option, so these
    come first): a shared master opened without the agent would not forward it."""
    import os

    if not os.environ.get("SSH_AUTH_SOCK"):
        render.warn("no SSH agent runs here (SSH_AUTH_SOCK is not set): nothing to forward; "
                    "start one with `eval $(ssh-agent)` and `ssh-add`")
    return ["-A", "-o", "ControlMaster=no", "-o", "ControlPath=none"]


@app.command("jupyter")
def jupyter(
    name: str = typer.Argument(..., help="The box whose Jupyter to open."),
    port: int = typer.Option(
        None, "--port", "-p", help="Port on THIS machine: the local end of the tunnel "
        "(default: a free one). Jupyter's port on the box is the one setup gave it."
    ),
    no_browser: bool = typer.Option(
        False, "--no-browser", help="Print the URL only; do not open a browser."
    ),
    stop: bool = typer.Option(
        False, "--stop", help="Close the tunnel (Jupyter keeps running on the box)."
    ),
) -> None:
    """Tunnel to the box's Jupyter and print (and open) its URL with the token.

    Example: gpubox jupyter box1 --port 8889 --no-browser
    """
    from gpubox import box as lifecycle
    from gpubox import jupyter as jupyter_mod
    from gpubox.validate import check_port

    check_port(port)
    settings = load_settings()
    state = _state(settings)
    try:
        if stop:
            if jupyter_mod.close_jupyter(settings, state, name):
                render.ok(f"closed the tunnel to '{name}'; Jupyter keeps running on the box")
            else:
                render.info(f"no tunnel to '{name}' was open")
            return
        box, endpoint = lifecycle.endpoint_for(settings, state, name)
        url = jupyter_mod.open_jupyter(
            settings, state, box, endpoint, local_port=port, browser=not no_browser
        )
    finally:
        state.close()
    render.say(url)


@app.command("ssh-config")
def ssh_config(
    install: bool = typer.Option(
        False,
        "--install",
        help="Also add `Include <gpubox's file>` at the top of ~/.ssh/config (asks first; "
        "keeps a backup), so plain `ssh NAME` works.",
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Answer yes to --install's question."),
) -> None:
    """Write an ssh config entry per box, with the pinned host key, for `ssh NAME` and editors.

    Example: gpubox ssh-config --install
    """
    from gpubox import box as lifecycle
    from gpubox.errors import GpuboxError
    from gpubox.remote.ssh_config import include_in_user_config, include_line, write_ssh_config

    settings = load_settings()
    state = _state(settings)
    entries = []
    try:
        for name in lifecycle.known_names(settings, state):
            try:
                _, endpoint = lifecycle.endpoint_for(settings, state, name)
            except GpuboxError as exc:
                render.warn(f"skipped '{name}': {exc.message}")
                continue
            if not endpoint.local:
                entries.append((name, endpoint))
    finally:
        state.close()
    path = write_ssh_config(settings, entries)
    render.ok(f"wrote {path} ({len(entries)} host{'s' if len(entries) != 1 else ''})")
    if not install:
        render.info(f"use it with `ssh -F {path} NAME`, or run `gpubox ssh-config --install`")
        return
    consent = yes
    if not consent:
        consent = render.confirm(
            f"Add `{include_line(settings)}` at the top of ~/.ssh/config (a backup is kept)?"
        )
    if include_in_user_config(settings, consent):
        render.ok("added the Include to ~/.ssh/config; `ssh NAME` now reaches your boxes")
    else:
        render.info("~/.ssh/config already includes gpubox's file")
