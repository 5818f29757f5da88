"""`gpubox run`: a command on every node of a box at once (torchrun across machines)."""

from __future__ import annotations

import typer

from gpubox.cli import render
from gpubox.cli.app import app
from gpubox.cli.app import settings as load_settings


@app.command("run")
def run(
    name: str = typer.Argument(..., help="The box (all its nodes run the command)."),
    command: list[str] = typer.Argument(
        ..., help="The command, after --. Several words run as a program and its "
        "arguments, quoting kept (python -c \"import os; print(1)\"); ONE quoted word is a "
        "shell line that each node's bash expands ('echo $GPUBOX_NODE_RANK')."
    ),
    port: int = typer.Option(
        29500, "--port", help="MASTER_PORT: the port node 0 listens on for the others.",
        min=1, max=65535,
    ),
) -> None:
    """Run a command on every node at once, in the box's environment, rendezvous set.

    The box's framework environment (~/.gpubox/venv) is first on PATH, so torchrun and
    python are the ones gpubox installed. Each node gets GPUBOX_NODE_RANK,
    GPUBOX_NUM_NODES, GPUBOX_NODE_IPS, GPUBOX_GPUS_PER_NODE, MASTER_ADDR, MASTER_PORT
    and torchrun's PET_* defaults, so a bare `torchrun train.py` joins the others.
    Node 0's output is shown here; every node's is kept in a log folder of this run's
    own (printed). The exit status is the first non-zero one among the nodes; Ctrl-C
    stops the command on every node.

    Example: gpubox run pair -- torchrun train.py
    """
    import sys

    from gpubox.inflight import Interrupted
    from gpubox.noderun import command_line, run_on_nodes
    from gpubox.state import open_state

    line = command_line(command)
    settings = load_settings()
    state = open_state(settings.state_path)

    def show(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    try:
        result = run_on_nodes(settings, state, name, line, port=port,
                              on_line=show, on_progress=render.info)
    except (KeyboardInterrupt, Interrupted) as exc:
        render.error("interrupted", f"the command was stopped on every node of '{name}'")
        raise typer.Exit(getattr(exc, "exit_code", 130)) from None
    finally:
        state.close()
    count = len(result.nodes)
    render.info(f"logs of all {count} node{'s' if count != 1 else ''}: {result.log_dir}")
    for node in result.failed():
        why = node.error.message if node.error else f"exit status {node.exit_code}"
        render.warn(f"node {node.rank} ('{node.name}'): {why}; log: {node.log_path}")
    raise typer.Exit(result.exit_code)
