"""Datasheet peaks of the GPUs in the AWS catalog: the one table of them.

Dense figures (no 2:4 sparsity), in TFLOPS and GB/s, from NVIDIA's datasheets for
the SXM / PCIe part AWS sells (the catalog, providers/aws/catalog.py, names the GPU
of each instance type; this table says how fast that GPU is on paper). A10G has no
public datasheet: its figures are the A10's, which it closely follows. Host-to-device
is the PCIe link's nominal rate (gen3 x16 ~15.8, gen4 ~31.5, gen5 ~63 GB/s).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Peak:
    model: str
    fp32: float  # TFLOPS, CUDA cores
    tf32: float | None  # TFLOPS, tensor cores; None: the GPU has no TF32
    fp16: float  # TFLOPS, tensor cores, fp32 accumulate where the datasheet says so
    bf16: float | None
    memory_gbps: float  # device memory bandwidth
    h2d_gbps: float  # PCIe link, one direction
    source: str

    def of(self, metric: str) -> float | None:
        return {"fp32": self.fp32, "tf32": self.tf32, "fp16": self.fp16, "bf16": self.bf16,
                "copy": self.memory_gbps, "h2d": self.h2d_gbps}.get(metric)


# Matched by substring of torch.cuda.get_device_name() / the catalog's model, in order:
# the most specific name first.
PEAKS: tuple[Peak, ...] = (
    Peak("T4", 8.1, None, 65.0, None, 320.0, 15.8, "NVIDIA T4 datasheet"),
    Peak("A10G", 31.2, 62.5, 125.0, 125.0, 600.0, 31.5, "NVIDIA A10 datasheet (A10G ~ A10)"),
    Peak("L40S", 91.6, 183.0, 362.0, 362.0, 864.0, 31.5, "NVIDIA L40S datasheet"),
    Peak("L4", 30.3, 60.0, 121.0, 121.0, 300.0, 31.5, "NVIDIA L4 datasheet"),
    Peak("A100-SXM4-80GB", 19.5, 156.0, 312.0, 312.0, 2039.0, 31.5, "NVIDIA A100 datasheet"),
    Peak("A100", 19.5, 156.0, 312.0, 312.0, 1555.0, 31.5, "NVIDIA A100 datasheet (40 GB)"),
    Peak("H200", 67.0, 494.5, 989.5, 989.5, 4800.0, 63.0, "NVIDIA H200 SXM datasheet"),
    Peak("H100", 67.0, 494.5, 989.5, 989.5, 3350.0, 63.0, "NVIDIA H100 SXM datasheet"),
)


def peak_for(gpu_name: str | None) -> Peak | None:
    """The datasheet entry for 'NVIDIA A10G', 'Tesla T4', 'NVIDIA H100 80GB HBM3' ..."""
    if not gpu_name:
        return None
    name = gpu_name.upper()
    for peak in PEAKS:
        if peak.model.upper() in name:
            return peak
    return None


def percent(measured: float | None, peak: float | None) -> float | None:
    if measured is None or not peak:
        return None
    return 100.0 * measured / peak
