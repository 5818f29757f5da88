"""Every stored suite result side by side, in money as well as speed.

Cost per unit of work is $/h divided by work per hour:
  $ per million training images = $/h / (ResNet-18 images/s x 3600) x 1e6
  $ per PFLOP                   = $/h / (matmul TFLOPS x 3600 / 1000)
at bf16 (fp32 where the device has no bf16). An AWS box is priced by AWS's price list
at the time of the run; an ssh or local box by the price its user gave it (`gpubox price`),
the one it has now, so a price set after a run counts. A price of 0 is shown as "free"
(it sorts first: nothing per image, however slow). A box without a price has no cost
figures and sorts last. Each row says whether it was a --quick run or a full one.
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
    mode: str = "full"  # "quick" (bench --quick: small sizes, less exact) or "full"
    provider: str | None = None
    price_source: str | None = None  # "you" (`gpubox price`), else where AWS's came from

    @property
    def free(self) -> bool:
        """Its user gave it a price of 0 (this machine, a host that costs them nothing)."""
        return self.price_per_hour == 0

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


USER_PRICED = ("local", "ssh")  # providers whose price is the one their user gives


def row_of(rec: dict[str, Any], prices: dict[tuple[str, str], float | None] | None = None) -> Row:
    """One result as a row. prices: {(provider, box): $/h now} of the ssh and local boxes
    that still exist; their price now replaces the one stored with the run."""
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
    source = rec.get("price_source")
    key = (rec.get("provider") or "", rec.get("box") or "")
    if prices and key[0] in USER_PRICED and key in prices:
        price = prices[key]
        source = "you" if price is not None else None
    quick = bool(suite.get("quick"))
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
        quick=quick,
        at=float(rec.get("at") or 0.0),
        mode="quick" if quick else "full",
        provider=rec.get("provider"),
        price_source=source,
    )


def value_order(row: Row) -> tuple[int, float, float]:
    """Cheapest work first; unknown prices last, fastest first among them."""
    cost = row.dollars_per_million_images
    if cost is None:
        cost = row.dollars_per_pflop
    return (cost is None, cost if cost is not None else 0.0, -(row.images_per_s or 0.0))


def rows(results: list[dict[str, Any]],
         prices: dict[tuple[str, str], float | None] | None = None) -> list[Row]:
    """Rows from State.bench_results(SUITE) items (each has a 'result'), by value for money;
    prices as in row_of."""
    if not results:
        raise NotFound(
            "no benchmark results yet",
            hint="run one with `gpubox bench NAME` (or `gpubox bench --types g4dn.xlarge,g5.xlarge`)",
        )
    return sorted((row_of(r["result"], prices) for r in results), key=value_order)


def user_prices(settings: Any) -> dict[tuple[str, str], float | None]:
    """{(provider, box): $/h} of the ssh and local boxes there are now (their registry
    files only: no network)."""
    from gpubox.providers.local import LocalProvider
    from gpubox.providers.ssh import SshProvider

    out: dict[tuple[str, str], float | None] = {}
    for prov in (LocalProvider(settings), SshProvider(settings)):
        for box in prov.list():
            out[(box.provider, box.name)] = box.price_per_hour
    return out


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


def _price_label(row: Row) -> str:
    if row.price_per_hour is None:
        return ""
    if row.free:
        return "free · "
    mine = " (your price)" if row.price_source == "you" else ""
    return f"${row.price_per_hour:,.2f}/h{mine} · "


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
    labels = [f"{r.box} ({r.type or '?'}), {r.mode}\n{_price_label(r)}"
              f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime(r.at))}" for r in table]
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
        cost = r.dollars_per_million_images
        if r.free:
            right.text(0, i, " free (price 0)", va="center", fontsize=8)
        elif cost is None:
            right.text(0, i, f" price unknown: gpubox price {r.box} DOLLARS_PER_HOUR"
                       if r.provider in USER_PRICED else " price unknown", va="center", fontsize=8)
        else:
            right.text(cost, i, f" ${cost:,.2f}" if cost >= 0.01 else f" ${cost:.4f}",
                       va="center", fontsize=8)
        if r.images_per_s:
            speed = f"{r.images_per_s:,.0f}" if r.images_per_s >= 100 else f"{r.images_per_s:.3g}"
            left.text(r.images_per_s, i, f" {speed}", va="center", fontsize=8)
    # Room at the right of each panel for the figures written after the bars.
    for axis in (left, right):
        low, high = axis.get_xlim()
        axis.set_xlim(0, high * 1.25 if high > 0 else 1)
    fig.suptitle("gpubox bench compare")
    fig.tight_layout()
    try:
        fig.savefig(path.expanduser(), format="png")
    except OSError as exc:
        raise GpuboxError(f"cannot write the plot to {path}: {exc.strerror}") from None
    finally:
        plt.close(fig)
    return path
