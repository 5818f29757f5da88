"""Run the benchmark suite on a box and keep its result on this machine.

The suite itself (payload.py, payload_ddp.py) is copied to ~/.gpubox/bench on the
host and run with the box's framework environment (~/.gpubox/venv, else python3).
This side adds what only the client knows: the box's type, region and $/h (AWS's price
list, or the price its user gave an ssh or local box), and the GPU's datasheet peaks (peaks.py) beside each measured figure.
"""

from __future__ import annotations

import json
import time
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpubox.bench.peaks import peak_for, percent
from gpubox.errors import GpuboxError
from gpubox.providers.base import Box, BoxState, Progress
from gpubox.setup import BOX_ENV

if TYPE_CHECKING:
    from gpubox.config import Settings
    from gpubox.remote.runner import Runner
    from gpubox.state import State

BENCH_DIR_ON_HOST = "$HOME/.gpubox/bench"
PAYLOADS = ("payload.py", "payload_ddp.py")
# The box's framework environment when gpubox set it up, else the host's python3.
PYTHON_ON_HOST = (
    f'if [ -x "{BOX_ENV}/bin/python" ]; then PY="{BOX_ENV}/bin/python"; else PY=python3; fi'
)
SUITE = "suite"  # the State.bench `payload` column of a suite result
SCALE = "scale"
SUITE_TIMEOUT_S = 1800.0
PRICE_BY_USER = "you"  # a record's price_source when its user gave the price


class BoxNotRunning(GpuboxError):
    """The box exists but is stopped: nothing can be measured on it."""

    def __init__(self, box: Box) -> None:
        super().__init__(
            f"box '{box.name}' is {box.state.value}, so there is nothing to measure",
            hint=f"start it with `gpubox start {box.name}` (billing resumes), then bench again",
        )
        self.box = box


def payload_file(name: str) -> Path:
    return Path(str(resources.files("gpubox.bench") / name))


def ensure_payload(runner: Runner) -> None:
    """Copy the suite's scripts to the host (they are small; always the current ones)."""
    for name in PAYLOADS:
        runner.put(payload_file(name), f"~/.gpubox/bench/{name}", mode=0o644)


def run_json(runner: Runner, command: str, timeout: float = SUITE_TIMEOUT_S) -> dict[str, Any]:
    """Run `command` (with $PY set) on the host; its last stdout line, parsed as JSON."""
    result = runner.run(f"{PYTHON_ON_HOST}; cd {BENCH_DIR_ON_HOST} && {command}",
                        check=False, timeout=timeout)
    output = (result.stdout + result.stderr).strip()
    if not result.ok:
        if "No module named 'torch'" in output:
            raise GpuboxError(
                "the box has no PyTorch in its framework environment",
                hint="`gpubox up NAME` sets it up (framework pytorch), then bench again",
            )
        raise GpuboxError(
            f"the benchmark failed on the box (exit {result.exit_code}):\n"
            + "\n".join(output.splitlines()[-15:])
        )
    lines = result.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, ValueError):
        raise GpuboxError(
            "the benchmark printed no result", hint="\n".join(output.splitlines()[-5:]) or None
        ) from None


def run_suite(runner: Runner, quick: bool = False) -> dict[str, Any]:
    """The raw suite result (payload.py's JSON), measured on the runner's host."""
    ensure_payload(runner)
    return run_json(runner, '"$PY" payload.py' + (" --quick" if quick else ""))


def probe(runner: Runner) -> dict[str, Any]:
    """The host's device facts (GPU model and count, driver, CUDA, torch)."""
    ensure_payload(runner)
    return run_json(runner, '"$PY" payload.py --probe', timeout=300)


def beside_peaks(raw: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """{metric: {measured, peak, percent}} for matmul dtypes, device copy and host-to-device."""
    device = raw.get("device", {})
    peak = peak_for(device.get("name")) if device.get("kind") == "cuda" else None
    figures: dict[str, float | None] = {
        name: m.get("tflops") for name, m in raw.get("matmul", {}).items()
    }
    figures["copy"] = raw.get("memory", {}).get("copy_gbps")
    figures["h2d"] = raw.get("memory", {}).get("h2d_gbps")
    out = {}
    for metric, measured in figures.items():
        top = peak.of(metric) if peak else None
        out[metric] = {"measured": measured, "peak": top, "percent": percent(measured, top)}
    return out


def record(box: Box, raw: dict[str, Any], price_per_hour: float | None,
           price_source: str | None = None) -> dict[str, Any]:
    """The stored form: the raw result with the box's facts and $/h at the time
    (price_source: where that $/h came from, e.g. "you" for a price its user gave)."""
    device = raw.get("device", {})
    return {
        "box": box.name,
        "provider": box.provider,
        "type": box.type,
        "region": box.region,
        "spot": box.spot,
        "mode": "quick" if raw.get("quick") else "full",
        "price_per_hour": price_per_hour,
        "price_source": price_source,
        "gpu_model": device.get("name") if device.get("kind") == "cuda" else None,
        "gpu_count": device.get("count", 0),
        "driver": device.get("driver"),
        "cuda": device.get("cuda"),
        "torch": device.get("torch"),
        "cpu": device.get("cpu"),
        "at": time.time(),
        "peaks": beside_peaks(raw),
        "suite": raw,
    }


def failed_checks(rec: dict[str, Any]) -> list[str]:
    """The dtypes whose matmul disagreed with the float64 reference."""
    return [n for n, m in rec["suite"].get("matmul", {}).items() if not m.get("ok")]


def bench_box(
    settings: Settings,
    state: State,
    box: Box,
    runner: Runner,
    *,
    quick: bool = False,
    on_progress: Progress | None = None,
) -> dict[str, Any]:
    """Run the suite on a running box through `runner`, store it, and return the record."""
    if box.state is not BoxState.RUNNING:
        raise BoxNotRunning(box)
    from gpubox.cost import hourly_rate

    if on_progress:
        on_progress(f"running the {'quick ' if quick else ''}benchmark suite on '{box.name}'")
    raw = run_suite(runner, quick=quick)
    rate = hourly_rate(settings, box)
    if rate is not None:
        rec = record(box, raw, rate.value, rate.source)
    else:  # an ssh or local box: the price its user gave it (`gpubox price`), if any
        rec = record(box, raw, box.price_per_hour,
                     PRICE_BY_USER if box.price_per_hour is not None else None)
    state.save_bench(box.name, box.type, SUITE, rec)
    return rec


def runner_of(settings: Settings, state: State, name: str) -> tuple[Box, Runner]:
    """The box called `name` and a runner on it; BoxNotRunning when it is stopped."""
    from gpubox import box as lifecycle
    from gpubox.remote import ssh as remote_ssh

    prov, box = lifecycle.find_box(settings, state, name)
    if box.state is not BoxState.RUNNING:
        raise BoxNotRunning(box)
    return box, remote_ssh.runner_for(prov.endpoint(box), settings, name)
