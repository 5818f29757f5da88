"""Your work on the box: `gpubox cp`, `gpubox sync`, `gpubox forward`.

Nothing heavy at module level: the library modules are imported inside each command.
"""

from __future__ import annotations

import contextlib
from typing import Annotated

import typer

from gpubox.cli import render
from gpubox.cli.app import app
from gpubox.cli.app import settings as load_settings
from gpubox.inflight import Interrupted


@contextlib.contextmanager
def _box(name: str):
    """(settings, state, Far) for a running box; a clear error when it is not."""
    from gpubox import box as lifecycle
    from gpubox.remote.transfer import Far
    from gpubox.state import open_state

    settings = load_settings()
    state = open_state(settings.state_path)
    try:
        _, endpoint = lifecycle.endpoint_for(settings, state, name)
        yield settings, state, Far(endpoint, settings, name)
    finally:
        state.close()


@contextlib.contextmanager
def _bar(label: str):
    """A progress bar fed by rsync's numbers on a terminal; None (quiet) when piped."""
    console = render.err_console()
    if not console.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, Progress, TextColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TextColumn("{task.fields[rate]}"), console=console, transient=True) as progress:
        task = progress.add_task(label, total=100, rate="")

        def update(done: int, percent: int, rate: str) -> None:
            progress.update(task, completed=percent, rate=rate)

        yield update


def _report(copied, what: str) -> None:
    if copied.method == "tar":
        render.warn(f"{copied.reason}: sent everything with a tar stream "
                    "(install rsync on both ends to send only what changed)")
        render.ok(f"{what} → {copied.target}")
        return
    count = len(copied.sent)
    render.ok(f"{what} → {copied.target} ({count} changed file{'s' if count != 1 else ''} sent; "
              "unchanged ones skipped)")


def _interrupted(again: str) -> None:
    render.warn(f"interrupted; run `{again}` again to resume (rsync keeps the part copied)")


@app.command("cp")
def cp(
    src: Annotated[str, typer.Argument(help="What to copy: a path here, or NAME:PATH on a box.")],
    dst: Annotated[str, typer.Argument(help="Where: NAME:PATH on a box, or a path here. "
                                       "End it with / to put SRC inside it.")],
    tar: Annotated[bool, typer.Option("--tar", help="Use a tar stream even when rsync is there "
                                      "(sends everything).")] = False,
    limit: Annotated[int | None, typer.Option("--limit", help="Bandwidth limit in KB/s (rsync).",
                                              min=1)] = None,
) -> None:
    """Copy files or folders between here and a box, over its pinned SSH.

    With rsync on both ends only what changed is sent and an interrupted copy resumes;
    otherwise a tar stream sends everything. DST becomes the copy of SRC.

    Example: gpubox cp box1:~/d2l/results .
    """
    from gpubox.errors import InvalidInput
    from gpubox.remote.transfer import copy, parse_location

    source, target = parse_location(src), parse_location(dst)
    if (source.box is None) == (target.box is None):
        both = "both sides are on a box" if source.box else "both sides are on this machine"
        raise InvalidInput(
            f"{both}: one side must be NAME:PATH on a box, the other a path here",
            hint="e.g. `gpubox cp ./data box1:~/data` or `gpubox cp box1:~/d2l/results .`",
        )
    name = source.box or target.box
    assert name is not None
    with _box(name) as (_, _, far), _bar(f"{src} → {dst}") as bar:
        try:
            copied = copy(far, source, target, on_progress=bar, bwlimit=limit, use_rsync=not tar)
        except (KeyboardInterrupt, Interrupted):  # Ctrl-C; SIGTERM as the CLI raises it
            _interrupted(f"gpubox cp {src} {dst}")
            raise
    _report(copied, src)


@app.command("sync")
def sync(
    name: Annotated[str, typer.Argument(help="The box to send the folder to.")],
    local_dir: Annotated[str, typer.Argument(help="The folder here (default: this one).")] = ".",
    remote_dir: Annotated[str | None, typer.Argument(
        help="The folder on the box (default: ~/ and the local folder's name).")] = None,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Keep watching; send again after "
                                        "each change, until Ctrl-C.")] = False,
    delete: Annotated[bool, typer.Option("--delete", help="Also delete files on the box that are "
                                         "gone here (rsync only; ignored files are kept).")] = False,
    tar: Annotated[bool, typer.Option("--tar", help="Use a tar stream even when rsync is there.")] = False,
) -> None:
    """Mirror a project folder to a box, honouring .gitignore and .gpuboxignore.

    Only what changed is sent (rsync); the .git folder is not sent.

    Example: gpubox sync box1 ~/proj ~/proj --watch
    """
    from gpubox.errors import GpuboxError
    from gpubox.remote import sync as syncing

    with _box(name) as (_, _, far):

        def once() -> None:
            with _bar(f"sync {local_dir}") as bar:
                copied = syncing.sync(far, local_dir, remote_dir, on_progress=bar, delete=delete,
                                      use_rsync=not tar)
            _report(copied, local_dir)

        if not watch:
            once()
            return

        def again() -> None:
            try:
                once()
            except GpuboxError as exc:  # the box may be back by the next change
                render.warn(f"this sync failed, still watching: {exc.message}")

        render.info("watching for changes after this sync (Ctrl-C to stop)")
        try:
            syncing.watch(local_dir, once, again)
        except (KeyboardInterrupt, Interrupted):  # Ctrl-C; SIGTERM as the CLI raises it
            render.ok("stopped watching")


@app.command("forward")
def forward(
    name: Annotated[str, typer.Argument(help="The box whose ports to reach.")],
    ports: Annotated[list[str] | None, typer.Argument(
        help="PORT (the same local port when free) or LOCAL:REMOTE; none lists the open ones.")] = None,
    stop: Annotated[bool, typer.Option("--stop", help="Close the box's forwards.")] = False,
) -> None:
    """Reach ports on the box's loopback (TensorBoard, an API) from this machine.

    The forwards live in the background like the Jupyter tunnel: reused while up,
    listed by `status NAME`, closed by --stop, `stop` and `down`.

    Example: gpubox forward box1 6006 8000:8080
    """
    from gpubox import box as lifecycle
    from gpubox import forwards
    from gpubox.state import open_state

    settings = load_settings()
    state = open_state(settings.state_path)
    try:
        if stop:
            closed = forwards.close_forwards(settings, state, name, forget=True)
            render.ok(f"closed {closed} forward{'s' if closed != 1 else ''} to '{name}'")
            return
        if not ports:
            live = forwards.live_forwards(state, name)
            for f in live:
                render.say(f.describe())
            if not live:
                render.info(f"no forwards to '{name}' are open; e.g. `gpubox forward {name} 6006`")
            return
        _, endpoint = lifecycle.endpoint_for(settings, state, name)
        opened = forwards.open_forwards(settings, state, name, endpoint, ports)
    finally:
        state.close()
    if endpoint.local:
        render.info(f"'{name}' is this machine: its ports are here already, nothing to forward")
    for f in opened:
        render.say(f.describe() + (" (already open)" if f.reused else ""))
