"""`gpubox run`: one command on every node of a box at once, for torchrun and friends.

Each node gets the environment a distributed launcher needs (the names follow
SkyPilot's and dstack's): GPUBOX_NODE_RANK, GPUBOX_NUM_NODES, GPUBOX_NODE_IPS (the
addresses the nodes reach each other at), GPUBOX_GPUS_PER_NODE, MASTER_ADDR and
MASTER_PORT, and torchrun's own PET_* defaults (so a bare `torchrun train.py` joins
the others). The box's framework environment (setup.BOX_ENV, ~/.gpubox/venv) comes
first on PATH, so `torchrun` and `python` are the ones gpubox installed. Node 0's output
goes to the caller as it comes; every node's goes to a log file of this run's own.
The command runs in its own session on each node (setsid), so Ctrl-C here ends the
whole process group there: torchrun and every worker it started.

The command is given as words (`gpubox run NAME -- CMD ...`), with one rule
(command_line): several words are a program and its arguments, passed as they are
(quoted for the shell, so quotes, spaces and `;` inside a word stay in it); a single
word is a shell line that bash reads on each node, so `'echo $GPUBOX_NODE_RANK'`
expands there.
"""

from __future__ import annotations

import functools
import secrets
import shlex
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpubox.cluster import Node, node_address, nodes_of
from gpubox.errors import GpuboxError, InvalidInput
from gpubox.inflight import Interrupted
from gpubox.localfiles import open_private
from gpubox.providers.base import BoxState

if TYPE_CHECKING:
    from gpubox.config import Settings
    from gpubox.remote.runner import Runner
    from gpubox.state import State

DEFAULT_PORT = 29500
PID_DIR = "~/.gpubox/run"
GPU_COUNT = "nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true"


def command_line(words: Sequence[str]) -> str:
    """The bash line for `gpubox run NAME -- WORDS...`: several words are a program and its
    arguments, kept as they are (shlex.join); one word is a shell line, read by bash on
    each node (so `'echo $GPUBOX_NODE_RANK'` expands there)."""
    words = list(words)
    if not words or not any(w.strip() for w in words):
        raise InvalidInput("no command to run",
                           hint="put it after --: gpubox run NAME -- python train.py")
    return words[0] if len(words) == 1 else shlex.join(words)


def node_env(rank: int, addresses: Sequence[str], gpus: int, port: int) -> dict[str, str]:
    return {
        "GPUBOX_NODE_RANK": str(rank),
        "GPUBOX_NUM_NODES": str(len(addresses)),
        "GPUBOX_NODE_IPS": ",".join(addresses),
        "GPUBOX_GPUS_PER_NODE": str(gpus),
        "MASTER_ADDR": addresses[0],
        "MASTER_PORT": str(port),
        # torchrun reads its options' defaults from PET_<OPTION>: a bare `torchrun
        # train.py` is then one process per GPU (one on a CPU node) of this world; any
        # option given on its command line still wins.
        "PET_NNODES": str(len(addresses)),
        "PET_NODE_RANK": str(rank),
        "PET_NPROC_PER_NODE": str(gpus or 1),
        "PET_MASTER_ADDR": addresses[0],
        "PET_MASTER_PORT": str(port),
    }


def wrapped(command: str, tag: str) -> str:
    """The command in a new session whose id (= its process group) is written down first,
    so `stop_everywhere` can end the group; the box's framework environment first on its
    PATH; the exit status is the command's."""
    from gpubox.setup import BOX_ENV_ON_PATH

    pid_file = f"{PID_DIR}/{tag}.pid"
    inner = f"echo $$ > {pid_file}; {BOX_ENV_ON_PATH}; exec bash -c {shlex.quote(command)}"
    return (f"mkdir -p {PID_DIR}; setsid -w bash -c {shlex.quote(inner)}; rc=$?; "
            f"rm -f {pid_file}; exit $rc")


@dataclass
class NodeRun:
    rank: int
    name: str
    runner: Runner
    log_path: Path
    exit_code: int | None = None
    error: GpuboxError | None = None
    thread: threading.Thread | None = field(default=None, repr=False)


@dataclass(frozen=True)
class RunResult:
    exit_code: int
    nodes: list[NodeRun]
    log_dir: Path

    def failed(self) -> list[NodeRun]:
        return [n for n in self.nodes if n.exit_code != 0]


def run_on_nodes(
    settings: Settings,
    state: State,
    name: str,
    command: str,
    *,
    port: int = DEFAULT_PORT,
    on_line: Callable[[str], None] = print,
    on_progress: Callable[[str], None] | None = None,
    first: int | None = None,
    prepare: Callable[[Runner], None] | None = None,
) -> RunResult:
    """Run `command` (bash) on every node of `name` at once and wait for all of them.

    `first`: only nodes 0..first-1 (they are then the whole world: GPUBOX_NUM_NODES is
    `first`). `prepare(runner)` runs on each of them once it is reached (to copy files).
    The exit status is the first non-zero one in node order. Ctrl-C (KeyboardInterrupt,
    or the CLI's inflight.Interrupted) stops the command on every node, then is raised
    again.
    """
    from gpubox.remote import ssh as remote_ssh

    nodes = nodes_of(settings, state, name, on_progress)[:first]
    asleep = [n.box.name for n in nodes if n.box.state is not BoxState.RUNNING
              and n.box.provider == "aws"]
    if asleep:
        raise GpuboxError(f"node(s) {', '.join(asleep)} of '{name}' are not running",
                          hint=f"start them with `gpubox start {name}`")
    endpoints = [n.provider.endpoint(n.box) for n in nodes]
    addresses = [node_address(n, e) for n, e in zip(nodes, endpoints, strict=True)]
    runners = [remote_ssh.runner_for(e, settings, n.box.name)
               for n, e in zip(nodes, endpoints, strict=True)]
    for node, endpoint in zip(nodes, endpoints, strict=True):
        if not endpoint.local:  # one after the other: they share one known_hosts file
            _reach(node, functools.partial(remote_ssh.ensure_host_key, endpoint, settings,
                                           node.box.name))
    for node, runner in zip(nodes, runners, strict=True):
        if prepare is not None:
            _reach(node, functools.partial(prepare, runner))
    gpus = _gpu_count(runners[0], nodes[0])
    log_dir = new_log_dir(settings.log_dir / "run", name)
    tag = log_dir.name  # also names the pid files on the nodes: one run's own
    runs = [NodeRun(n.rank, n.box.name, r, log_dir / f"node-{n.rank}.log")
            for n, r in zip(nodes, runners, strict=True)]
    for run in runs:
        env = node_env(run.rank, addresses, gpus, port)
        show = on_line if run.rank == 0 else None
        run_tag = f"{tag}-{run.rank}"  # two nodes may share a host (and a HOME)
        run.thread = threading.Thread(target=_one, args=(run, wrapped(command, run_tag), env, show),
                                      daemon=True)
        run.thread.start()
    try:
        for run in runs:
            while run.thread is not None and run.thread.is_alive():
                run.thread.join(0.2)
    except (KeyboardInterrupt, Interrupted):  # Ctrl-C, or SIGTERM, as the CLI raises them
        stop_everywhere(runs, tag)
        raise
    codes = [r.exit_code if r.exit_code is not None else 255 for r in runs]
    first = next((c for c in codes if c != 0), 0)
    return RunResult(first, runs, log_dir)


def new_log_dir(parent: Path, name: str) -> Path:
    """A folder of this run's own, NAME-YYYYMMDD-HHMMSS-xxxx: two runs started in the same
    second (two terminals, a script) never share one."""
    from gpubox.localfiles import private_dir

    private_dir(parent)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    while True:
        folder = parent / f"{name}-{stamp}-{secrets.token_hex(2)}"
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            continue
        return folder


def _reach(node: Node, call: Callable[[], Any]) -> Any:
    try:
        return call()
    except GpuboxError as exc:
        raise GpuboxError(f"node {node.rank} ('{node.box.name}') cannot be reached: "
                          f"{exc.message}", hint=exc.hint) from None


def _gpu_count(runner: Runner, node: Node) -> int:
    out = _reach(node, lambda: runner.run(GPU_COUNT, check=False, timeout=60)).stdout.strip()
    return int(out) if out.isdigit() else 0


def _one(run: NodeRun, command: str, env: dict[str, str],
         show: Callable[[str], None] | None) -> None:
    with open_private(run.log_path, "w", buffering=1) as log:
        def line(text: str) -> None:
            log.write(text + "\n")
            if show is not None:
                show(text)

        try:
            run.exit_code = run.runner.stream(command, line, env=env)
        except GpuboxError as exc:
            run.error = exc
            run.exit_code = 255
            log.write(f"gpubox: node {run.rank} ('{run.name}'): {exc.message}\n")


def stop_everywhere(runs: Sequence[NodeRun], tag: str) -> None:
    """End the command's process group on every node (each over its own connection)."""
    def one(run: NodeRun) -> None:
        kill = (f"p=$(cat {PID_DIR}/{tag}-{run.rank}.pid 2>/dev/null) && "
                f'kill -TERM -- "-$p" 2>/dev/null; true')
        try:
            run.runner.run(kill, check=False, timeout=20)
        except GpuboxError:
            pass  # unreachable now: its ssh session ending will hang the command up

    threads = [threading.Thread(target=one, args=(r,), daemon=True) for r in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
