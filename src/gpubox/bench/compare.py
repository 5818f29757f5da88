"""Every stored suite result side by side, in money as well as speed.

Cost per unit of work is $/h divided by work per hour:
  $ per million training images = $/h / (ResNet-18 images/s x 3600) x 1e6
  $ per PFLOP                   = $/h / (matmul TFLOPS x 3600 / 1000)
at bf16 (fp32 where the device has no bf16). A box whose price gpubox does not know
(this machine, an ssh host) has no cost figures and sorts last.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gpubox.errors import GpuboxError, NotFound

TRAINING_WORKLOAD = "resnet18"


@dataclass(frozen=True)
class Row:
    box: str
    type: str | None
    device: str  # "NVIDIA A10G x1" or "CPU: AMD EPYC"
    price_per_hour: float | None
    matmul_dtype: str | None  # bf16, else fp32
    tflops: float | None
    images_per_s: float | None  # ResNet-18 training
    lenet_images_per_s: float | None
    copy_gbps: float | None
    dollars_per_million_images: float | None
    dollars_per_pflop: float | None
    quick: bool
    at: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def per_million_images(price_per_hour: float | None, images_per_s: float | None) -> float | None:
    if price_per_hour is None or not images_per_s:
        return None
    return price_per_hour / (images_per_s * 3600) * 1e6


def per_pflop(price_per_hour: float | None, tflops: float | None) -> float | None:
    if price_per_hour is None or not tflops:
        return None
    return price_per_hour / (tflops * 3600 / 1000)


def row_of(rec: dict[str, Any]) -> Row:
    suite = rec.get("suite", {})
    matmul = suite.get("matmul", {})
    dtype = "bf16" if matmul.get("bf16", {}).get("ok") else (
        "fp32" if matmul.get("fp32", {}).get("ok") else None)
    tflops = matmul[dtype]["tflops"] if dtype else None
    training = suite.get("training", {})
    images = training.get(TRAINING_WORKLOAD, {}).get("images_per_s")
    device = suite.get("device", {})
    if device.get("kind") == "cuda":
        where = f"{device.get('name')} x{device.get('count', 1)}"
    else:
        where = f"CPU: {device.get('cpu') or device.get('name') or '?'}"
    price = rec.get("price_per_hour")
    return Row(
        box=rec.get("box", "?"),
        type=rec.get("type"),
        device=where,
        price_per_hour=price,
        matmul_dtype=dtype,
        tflops=tflops,
        images_per_s=images,
        lenet_images_per_s=training.get("lenet", {}).get("images_per_s"),
        copy_gbps=suite.get("memory", {}).get("copy_gbps"),
        dollars_per_million_images=per_million_images(price, images),
        dollars_per_pflop=per_pflop(price, tflops),
        quick=bool(suite.get("quick")),
        at=float(rec.get("at") or 0.0),
    )


def value_order(row: Row) -> tuple[int, float, float]:
    """Cheapest work first; unknown prices last, fastest first among them."""
    cost = row.dollars_per_million_images
    if cost is None:
        cost = row.dollars_per_pflop
    return (cost is None, cost if cost is not None else 0.0, -(row.images_per_s or 0.0))


def rows(results: list[dict[str, Any]]) -> list[Row]:
    """Rows from State.bench_results(SUITE) items (each has a 'result'), by value for money."""
    if not results:
        raise NotFound(
            "no benchmark results yet",
            hint="run one with `gpubox bench NAME` (or `gpubox bench --types g4dn.xlarge,g5.xlarge`)",
        )
    return sorted((row_of(r["result"]) for r in results), key=value_order)


def check_writable(path: Path) -> None:
    """Fail before any work when the plot cannot be written there."""
    folder = path.expanduser().resolve().parent
    if not folder.is_dir():
        raise GpuboxError(f"cannot write the plot to {path}: folder {folder} does not exist",
                          hint="give a path in an existing folder, e.g. --plot bench.png")
    target = path.expanduser()
    existed = target.exists()
    try:
        with open(target, "ab"):
            pass
        if not existed:
            target.unlink()
    except OSError as exc:
        raise GpuboxError(f"cannot write the plot to {path}: {exc.strerror}",
                          hint="give a path you can write, e.g. --plot ./bench.png") from None


def plot(table: list[Row], path: Path) -> Path:
    """Two bar charts (training throughput; $ per million images) as a PNG at `path`."""
    check_writable(path)
    try:
        import matplotlib
    except ImportError:
        raise GpuboxError("the plot needs matplotlib",
                          hint="pip install 'gpubox[bench]' (or pip install matplotlib)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Positions, not the labels themselves: two runs on one box must be two bars.
    where = list(range(len(table)))
    labels = [f"{r.box} ({r.type or '?'})\n{time.strftime('%Y-%m-%d %H:%M', time.gmtime(r.at))}"
              for r in table]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 0.6 * len(table) + 2.2), dpi=80)
    left.barh(where, [r.images_per_s or 0 for r in table], color="#4c72b0")
    left.set_yticks(where, labels, fontsize=8)
    left.set_xlabel("ResNet-18 training, images/s (higher is better)")
    right.barh(where, [r.dollars_per_million_images or 0 for r in table], color="#dd8452")
    right.set_yticks(where, [""] * len(table))
    right.set_xlabel("$ per million training images (lower is better)")
    for axis in (left, right):
        axis.set_xlim(left=0)
        axis.invert_yaxis()
        axis.grid(axis="x", alpha=0.3)
    for i, r in enumerate(table):
        if r.dollars_per_million_images is None:
            right.text(0, i, " price unknown", va="center", fontsize=8)
    fig.suptitle("gpubox bench compare")
    fig.tight_layout()
    try:
        fig.savefig(path.expanduser(), format="png")
    except OSError as exc:
        raise GpuboxError(f"cannot write the plot to {path}: {exc.strerror}") from None
    finally:
        plt.close(fig)
    return path
