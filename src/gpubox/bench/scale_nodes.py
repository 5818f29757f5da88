"""`scale --nodes`: the same data-parallel workload on the first 1..N nodes of a box.

Each node count k is one `gpubox run` (noderun.py) on nodes 0..k-1 of PyTorch's own
launcher, `python -m torch.distributed.run --nnodes k --node-rank R --master-addr
--master-port payload_ddp.py`, one process per GPU of each node (NCCL), or one CPU
process per node with gloo when the nodes have no GPU. Speed-up is images/s on k
nodes over images/s on one; efficiency is speed-up / k (scale.py's arithmetic).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from gpubox.bench.scale import _points
from gpubox.bench.suite import BENCH_DIR_ON_HOST, PYTHON_ON_HOST, SCALE, ensure_payload
from gpubox.errors import GpuboxError, InvalidInput
from gpubox.providers.base import Progress

if TYPE_CHECKING:
    from gpubox.config import Settings
    from gpubox.noderun import RunResult
    from gpubox.state import State

# Runs on each node with noderun's variables set. Without a GPU: one gloo process per
# node, on the interface that holds this node's address (unless GLOO_SOCKET_IFNAME is
# set already): gloo otherwise takes whatever the host name resolves to.
NODE_COMMAND = (
    f"{PYTHON_ON_HOST}; cd {BENCH_DIR_ON_HOST} || exit 1; "
    'if [ "${GPUBOX_GPUS_PER_NODE:-0}" -gt 0 ]; then N=$GPUBOX_GPUS_PER_NODE; '
    "else N=1; export CUDA_VISIBLE_DEVICES=; "
    'me=$(echo "$GPUBOX_NODE_IPS" | cut -d, -f$((GPUBOX_NODE_RANK + 1))); '
    "dev=$(ip -o addr show 2>/dev/null | awk -v a=\"$me/\" 'index($4, a) == 1 {print $2; exit}'); "
    'if [ -z "${GLOO_SOCKET_IFNAME:-}" ] && [ -n "$dev" ]; then export GLOO_SOCKET_IFNAME=$dev; fi; '
    "fi; "
    '"$PY" -m torch.distributed.run --nnodes "$GPUBOX_NUM_NODES" --nproc-per-node "$N" '
    '--node-rank "$GPUBOX_NODE_RANK" --master-addr "$MASTER_ADDR" '
    '--master-port "$MASTER_PORT" payload_ddp.py'
)


def choose_nodes(requested: list[int], have: int, box: str) -> list[int]:
    """Node counts to run (always 1, the baseline); a clear error past what the box has."""
    counts = sorted({1, *requested})
    if counts[-1] > have:
        plural = "node" if have == 1 else "nodes"
        raise InvalidInput(
            f"--nodes {counts[-1]}: '{box}' has {have} {plural}",
            hint=f"ask for at most {have}" if have > 1 else
            "a box of several machines: `gpubox up NAME --host A --host B` or "
            "`gpubox up NAME --nodes 2 --type T`",
        )
    return counts


def _result(run: RunResult, lines: list[str], k: int) -> dict[str, Any]:
    """Rank 0's JSON line (node 0's output); a failure names the nodes and their logs."""
    if run.exit_code != 0:
        failed = run.failed()
        tail = "\n".join(failed[0].log_path.read_text(errors="replace").splitlines()[-12:]) \
            if failed and failed[0].log_path.exists() else ""
        names = ", ".join(f"node {n.rank} ('{n.name}')" for n in failed)
        raise GpuboxError(f"training on {k} node(s) failed on {names}:\n{tail}",
                          hint=f"every node's output is in {run.log_dir}")
    for line in reversed(lines):
        try:
            found = json.loads(line)
        except ValueError:
            continue
        if isinstance(found, dict) and "images_per_s" in found:
            return found
    raise GpuboxError(f"training on {k} node(s) printed no result",
                      hint=f"node 0's output is in {run.log_dir}")


def run_node_scale(
    settings: Settings,
    state: State,
    name: str,
    requested: list[int],
    *,
    quick: bool = False,
    on_progress: Progress | None = None,
) -> dict[str, Any]:
    """Train on the first k nodes for each count; the stored record."""
    from gpubox.cluster import nodes_of
    from gpubox.noderun import DEFAULT_PORT, run_on_nodes

    say = on_progress or (lambda _m: None)
    nodes = nodes_of(settings, state, name, on_progress)
    counts = choose_nodes(requested, len(nodes), name)
    command = NODE_COMMAND + (" --quick" if quick else "")
    runs = []
    for index, k in enumerate(counts):
        say(f"training on {k} node{'s' if k > 1 else ''}")
        lines: list[str] = []
        # A port of its own per count: the last run's rendezvous socket may linger.
        run = run_on_nodes(settings, state, name, command, port=DEFAULT_PORT + index,
                           on_line=lines.append, on_progress=on_progress, first=k,
                           prepare=ensure_payload)
        runs.append(_result(run, lines, k))
    points = _points(runs, counts)
    head = nodes[0].box
    first = runs[0]
    rec = {
        "box": name, "type": head.type, "nodes": len(nodes),
        "processes_per_node": first["world"], "gpu_model": first.get("gpu"),
        "gpu_count": first["world"] if first["device"] == "cuda" else 0,
        "quick": quick,
        "notes": [] if len(counts) > 1 else [f"one node only: nothing to compare on '{name}'"],
        "points": {"nodes": [p.to_dict() for p in points]},
    }
    state.save_bench(name, head.type, SCALE, rec)
    return rec
