"""What `bench` prints for a GPU result (the CPU one is in test_bench_local.py)."""

from __future__ import annotations

from gpubox.bench.suite import record
from gpubox.cli import bench as bench_cli
from gpubox.cli import render
from gpubox.providers.base import Box, BoxState

A10G = {
    "device": {"kind": "cuda", "name": "NVIDIA A10G", "count": 1, "capability": "8.6",
               "driver": "550.90.07", "cuda": "12.4", "torch": "2.13.0+cu124", "cpus": 4},
    "matmul": {
        "fp32": {"n": 8192, "tflops": 24.96, "ok": True, "rel_error": 2e-6, "bound": 1e-4},
        "bf16": {"n": 8192, "tflops": 70.0, "ok": False, "rel_error": 0.5, "bound": 3e-2},
    },
    "skipped": {},
    "memory": {"bytes": 2**30, "copy_gbps": 510.0, "h2d_gbps": 25.2},
    "training": {"resnet18": {"images_per_s": 2400.0, "batch": 256, "image_size": 96,
                              "steps": 30, "precision": "bf16 autocast"}},
    "notes": [],
}


def test_a_gpu_result_is_shown_beside_its_datasheet_peaks(monkeypatch, capsys):
    monkeypatch.setattr(render, "_console", None)
    monkeypatch.setattr(render, "_err_console", None)
    box = Box(name="box1", provider="aws", state=BoxState.RUNNING, type="g5.xlarge")
    bench_cli._show_record(record(box, A10G, 1.006))
    out = capsys.readouterr().out
    assert "NVIDIA A10G x1, driver 550.90.07, CUDA 12.4" in out
    assert "80%" in out  # fp32: 24.96 of 31.2 TFLOPS
    assert "85%" in out  # copy: 510 of 600 GB/s
    assert "WRONG" in out  # the bf16 product failed its float64 check
    assert "$1.01/h" in out
