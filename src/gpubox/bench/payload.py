"""gpubox's benchmark suite: runs ON the box, in its framework environment.

Standard library and torch only (it is copied to the host alone and run with the
box's Python). Prints one JSON object on its last line: the device, matmul
throughput per dtype (each checked against a float64 reference), memory
bandwidth and D2L training throughput. Datasheet peaks are the client's business
(gpubox.bench.peaks): this script only measures.

    python payload.py [--quick] [--probe]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import torch
from torch import nn

SCHEMA = 1
# Relative (Frobenius) error a correct matmul stays under, against float64 on the
# same rounded inputs: a few units of each dtype's rounding error, not a tight fit.
ERROR_BOUNDS = {"fp32": 1e-4, "tf32": 5e-3, "fp16": 5e-3, "bf16": 3e-2}
DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "fp16": torch.float16,
          "bf16": torch.bfloat16}
CHECK_ROWS = 256


# Device --------------------------------------------------------------------
def _driver_version() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out.splitlines()[0].strip() if out else None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_info() -> dict:
    info = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(
            kind="cuda",
            name=torch.cuda.get_device_name(0),
            count=torch.cuda.device_count(),
            memory_gib=round(props.total_memory / 2**30, 1),
            capability=f"{props.major}.{props.minor}",
            cuda=torch.version.cuda,
            driver=_driver_version(),
        )
    else:
        info.update(kind="cpu", name=info["cpu"], count=0, cuda=None, driver=None)
    return info


def has_dtype(kind: str, capability: str | None, name: str) -> str | None:
    """None when the device runs `name` natively; else why it is skipped."""
    if kind == "cpu":
        if name in ("tf32", "fp16"):
            return "not a CPU format worth timing"
        if name == "bf16":
            try:
                torch.ones(2, 2, dtype=torch.bfloat16) @ torch.ones(2, 2, dtype=torch.bfloat16)
            except RuntimeError:
                return "this torch has no bf16 matmul on this CPU"
        return None
    major = int((capability or "0.0").split(".")[0])
    if name in ("tf32", "bf16") and major < 8:
        return f"needs compute capability 8.0 (Ampere) or newer; this GPU is {capability}"
    return None


# Timing --------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_op(fn, device: torch.device, warmup: int, repeats: int) -> float:
    """Median seconds of `fn` after warm-up: CUDA events on a GPU, perf_counter on a CPU."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1000)
        else:
            began = time.perf_counter()
            fn()
            times.append(time.perf_counter() - began)
    return statistics.median(times)


# Matmul --------------------------------------------------------------------
def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| (Frobenius), in float64."""
    out, ref = out.double(), ref.double()
    return float(torch.linalg.norm(out - ref) / torch.linalg.norm(ref))


def check_matmul(name: str, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> dict:
    """Compare the first rows of c = a @ b with float64 arithmetic on the same inputs."""
    rows = min(CHECK_ROWS, a.shape[0])
    ref = a[:rows].double() @ b.double()
    error = relative_error(c[:rows], ref)
    bound = ERROR_BOUNDS[name]
    return {"rel_error": error, "bound": bound, "ok": bool(error <= bound)}


def bench_matmul(name: str, n: int, device: torch.device, warmup: int, repeats: int) -> dict:
    dtype = DTYPES[name]
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = name == "tf32"
    c = a @ b
    checked = check_matmul(name, a, b, c)
    seconds = time_op(lambda: torch.matmul(a, b, out=c), device, warmup, repeats)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
    return {"n": n, "seconds": seconds, "tflops": 2 * n**3 / seconds / 1e12, **checked}


# Memory --------------------------------------------------------------------
def bench_memory(device: torch.device, nbytes: int, warmup: int, repeats: int) -> dict:
    src = torch.empty(nbytes, dtype=torch.uint8, device=device).fill_(1)
    dst = torch.empty_like(src)
    seconds = time_op(lambda: dst.copy_(src), device, warmup, repeats)
    out = {"bytes": nbytes, "copy_gbps": 2 * nbytes / seconds / 1e9, "h2d_gbps": None}
    if device.type == "cuda":
        host = torch.empty(nbytes, dtype=torch.uint8).pin_memory()
        seconds = time_op(lambda: src.copy_(host, non_blocking=True), device, warmup, repeats)
        out["h2d_gbps"] = nbytes / seconds / 1e9
    return out


# D2L training --------------------------------------------------------------
def lenet() -> nn.Module:
    """LeNet as in D2L 7.6 (sigmoid, average pooling) for 28x28 Fashion-MNIST."""
    return nn.Sequential(
        nn.Conv2d(1, 6, kernel_size=5, padding=2), nn.Sigmoid(), nn.AvgPool2d(2, 2),
        nn.Conv2d(6, 16, kernel_size=5), nn.Sigmoid(), nn.AvgPool2d(2, 2), nn.Flatten(),
        nn.Linear(400, 120), nn.Sigmoid(), nn.Linear(120, 84), nn.Sigmoid(), nn.Linear(84, 10),
    )


class Residual(nn.Module):
    """D2L 8.6's residual block."""

    def __init__(self, cin: int, cout: int, use_1x1conv: bool = False, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, stride=stride)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.conv3 = nn.Conv2d(cin, cout, 1, stride=stride) if use_1x1conv else None
        self.bn1, self.bn2 = nn.BatchNorm2d(cout), nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + (self.conv3(x) if self.conv3 is not None else x))


def resnet18() -> nn.Module:
    """ResNet-18 as in D2L 8.6, one input channel (Fashion-MNIST at 96x96)."""

    def stage(cin: int, cout: int, first: bool) -> list[nn.Module]:
        if first:
            return [Residual(cin, cout), Residual(cout, cout)]
        return [Residual(cin, cout, use_1x1conv=True, stride=2), Residual(cout, cout)]

    return nn.Sequential(
        nn.Conv2d(1, 64, 7, stride=2, padding=3), nn.BatchNorm2d(64), nn.ReLU(),
        nn.MaxPool2d(3, stride=2, padding=1),
        *stage(64, 64, True), *stage(64, 128, False), *stage(128, 256, False),
        *stage(256, 512, False),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 10),
    )


def amp_dtype(device: torch.device, capability: str | None) -> torch.dtype | None:
    if device.type != "cuda":
        return None
    return torch.bfloat16 if int((capability or "0").split(".")[0]) >= 8 else torch.float16


def train_step_fn(model: nn.Module, device: torch.device, batch: int, size: int,
                  amp: torch.dtype | None, lr: float, seed: int = 1):
    """One SGD step on a fixed synthetic Fashion-MNIST-shaped batch (nothing downloaded).
    The model may be wrapped in DistributedDataParallel (payload_ddp.py: seed = rank)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.randn(batch, 1, size, size, generator=gen).to(device)
    y = torch.randint(0, 10, (batch,), generator=gen).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    scaler = torch.amp.GradScaler("cuda") if amp is torch.float16 else None

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            loss = loss_fn(model(x), y)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()

    return step


def bench_training(name: str, device: torch.device, batch: int, steps: int, *, size: int,
                   amp: torch.dtype | None, warmup: int = 2) -> dict:
    model = (lenet() if name == "lenet" else resnet18()).to(device)
    step = train_step_fn(model, device, batch, size, amp, lr=0.9 if name == "lenet" else 0.05)
    for _ in range(warmup):
        step()
    sync(device)
    began = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    seconds = time.perf_counter() - began
    precision = {torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast"}.get(amp, "fp32")
    return {"images_per_s": batch * steps / seconds, "batch": batch, "image_size": size,
            "steps": steps, "precision": precision}


# The suite -----------------------------------------------------------------
def sizes(kind: str, quick: bool) -> dict:
    if kind == "cuda":
        return {"n": 2048 if quick else 8192, "mem": (64 if quick else 1024) << 20,
                "warmup": 2 if quick else 5, "repeats": 5 if quick else 20,
                "lenet": (256, 10 if quick else 100), "resnet18": (64 if quick else 256, 3 if quick else 30)}
    return {"n": 256 if quick else 1024, "mem": (4 if quick else 128) << 20,
            "warmup": 1, "repeats": 3 if quick else 5,
            "lenet": (64 if quick else 256, 3 if quick else 10),
            "resnet18": (2 if quick else 16, 1 if quick else 3)}


def run_suite(quick: bool = False) -> dict:
    began = time.perf_counter()
    info = device_info()
    device = torch.device("cuda:0" if info["kind"] == "cuda" else "cpu")
    size = sizes(info["kind"], quick)
    notes = [] if info["kind"] == "cuda" else ["no GPU: the suite ran on the CPU"]
    matmul, skipped = {}, {}
    for name in DTYPES:
        why = has_dtype(info["kind"], info.get("capability"), name)
        if why:
            skipped[name] = why
            continue
        matmul[name] = bench_matmul(name, size["n"], device, size["warmup"], size["repeats"])
    memory = bench_memory(device, size["mem"], size["warmup"], size["repeats"])
    amp = amp_dtype(device, info.get("capability"))
    training = {
        name: bench_training(name, device, *size[name], size=28 if name == "lenet" else 96,
                             amp=amp, warmup=1 if quick else 2)
        for name in ("lenet", "resnet18")
    }
    return {
        "schema": SCHEMA, "quick": quick, "device": info, "matmul": matmul,
        "skipped": skipped, "memory": memory, "training": training, "notes": notes,
        "seconds": time.perf_counter() - began,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes: seconds, not minutes")
    parser.add_argument("--probe", action="store_true", help="only the device facts")
    args = parser.parse_args(argv)
    result = device_info() if args.probe else run_suite(quick=args.quick)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
