"""`scale`: data-parallel training on 1..N GPUs of one box, with torchrun and DDP.

Each count is one run of PyTorch's own launcher on the box
(`python -m torch.distributed.run --standalone --nproc-per-node K payload_ddp.py`),
NCCL between GPUs. Speed-up is images/s at K over images/s at 1; scaling efficiency
is speed-up / K. A box with one GPU or none cannot show GPU scaling; it says so and
still runs 1..N processes on the CPU with gloo, so the whole path is exercised.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from gpubox.bench.suite import SCALE, ensure_payload, probe, run_json
from gpubox.errors import InvalidInput
from gpubox.providers.base import Box, Progress

if TYPE_CHECKING:
    from gpubox.remote.runner import Runner
    from gpubox.state import State

TORCHRUN = '"$PY" -m torch.distributed.run --standalone --nproc-per-node {k} payload_ddp.py'
# Gloo on one machine: over loopback, never another interface; no GPU even if there is one.
CPU_ENV = "CUDA_VISIBLE_DEVICES= GLOO_SOCKET_IFNAME=lo "
RUN_TIMEOUT_S = 900.0


@dataclass(frozen=True)
class Point:
    count: int
    device: str  # cuda | cpu
    backend: str  # nccl | gloo
    model: str
    images_per_s: float
    speedup: float
    efficiency: float
    busbw_gbps: float | None  # None for one process: nothing to all-reduce with

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_counts(text: str | None, flag: str = "--gpus") -> list[int] | None:
    if text is None:
        return None
    try:
        counts = sorted({int(p) for p in text.split(",") if p.strip()})
    except ValueError:
        raise InvalidInput(f"{flag} {text}: not a list of numbers", hint=f"e.g. {flag} 1,2,4,8") from None
    if not counts or counts[0] < 1:
        raise InvalidInput(f"{flag} {text}: counts start at 1", hint=f"e.g. {flag} 1,2,4,8")
    return counts


def default_counts(top: int) -> list[int]:
    counts, k = [], 1
    while k <= top:
        counts.append(k)
        k *= 2
    return counts if counts[-1] == top else [*counts, top]


def choose_counts(requested: list[int] | None, gpus: int, cpus: int, box: str) -> tuple[
        list[int], list[int], list[str]]:
    """(GPU counts, CPU process counts, notes) for a box with `gpus` GPUs and `cpus` cores."""
    notes = []
    if gpus >= 2:
        wanted = requested or default_counts(gpus)
        if wanted[-1] > gpus:
            raise InvalidInput(f"--gpus {wanted[-1]}: '{box}' has {gpus} GPUs",
                               hint=f"ask for at most {gpus}, e.g. --gpus {','.join(map(str, default_counts(gpus)))}")
        return sorted({1, *wanted}), [], notes
    if requested and requested[-1] > 1 and gpus == 1:
        raise InvalidInput(f"--gpus {requested[-1]}: '{box}' has 1 GPU",
                           hint="a box with one GPU can only run --gpus 1; scaling needs a "
                           "multi-GPU type (e.g. g5.12xlarge, 4 GPUs)")
    # Two processes at least (even on one core) so that the all-reduce path runs.
    cpu_top = min(max(cpus, 2), 4)
    if requested is not None and gpus == 0:
        cpu_top = requested[-1]
        if cpu_top > max(cpus, 2):
            raise InvalidInput(f"--gpus {cpu_top}: '{box}' has no GPU and {cpus} CPU cores",
                               hint=f"on the CPU, ask for at most {max(cpus, 2)} processes")
    what = "no GPU" if gpus == 0 else "one GPU"
    notes.append(f"{what}: speed-up across GPUs and NCCL bus bandwidth cannot be measured "
                 f"on '{box}'; ran 1..{cpu_top} CPU processes with gloo to exercise the path")
    return ([1] if gpus == 1 else []), list(range(1, cpu_top + 1)), notes


def _points(runs: list[dict[str, Any]], counts: list[int] | None = None) -> list[Point]:
    """Speed-up against the first run per unit (a process, or a node when `counts` are
    node counts); efficiency = speed-up / count."""
    counts = counts or [r["world"] for r in runs]
    base = runs[0]["images_per_s"] / counts[0] if runs else 0.0
    out = []
    for r, count in zip(runs, counts, strict=True):
        speedup = r["images_per_s"] / base if base else 0.0
        out.append(Point(
            count=count, device=r["device"], backend=r["backend"], model=r["model"],
            images_per_s=r["images_per_s"], speedup=speedup, efficiency=speedup / count,
            busbw_gbps=r["allreduce"]["busbw_gbps"] if r["world"] > 1 else None,
        ))
    return out


def run_scale(
    state: State,
    box: Box,
    runner: Runner,
    counts: list[int] | None = None,
    *,
    quick: bool = False,
    on_progress: Progress | None = None,
) -> dict[str, Any]:
    """Run the data-parallel workload at each count; the stored record."""
    say = on_progress or (lambda _m: None)
    ensure_payload(runner)
    facts = probe(runner)
    gpus = int(facts.get("count") or 0) if facts.get("kind") == "cuda" else 0
    gpu_counts, cpu_counts, notes = choose_counts(counts, gpus, int(facts.get("cpus") or 1), box.name)
    flag = " --quick" if quick else ""
    points: dict[str, list[Point]] = {}
    for label, env, wanted in (("cuda", "", gpu_counts), ("cpu", CPU_ENV, cpu_counts)):
        runs = []
        for k in wanted:
            unit = ("GPU" if k == 1 else "GPUs") if label == "cuda" else (
                "CPU process" if k == 1 else "CPU processes")
            say(f"training on {k} {unit}")
            runs.append(run_json(runner, env + TORCHRUN.format(k=k) + flag, timeout=RUN_TIMEOUT_S))
        if runs:
            points[label] = _points(runs)
    rec = {
        "box": box.name, "type": box.type, "gpu_model": facts.get("name") if gpus else None,
        "gpu_count": gpus, "torch": facts.get("torch"), "cuda": facts.get("cuda"),
        "driver": facts.get("driver"), "quick": quick, "notes": notes,
        "points": {k: [p.to_dict() for p in v] for k, v in points.items()},
    }
    state.save_bench(box.name, box.type, SCALE, rec)
    return rec
