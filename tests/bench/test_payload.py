"""The suite's own checks, for real on the CPU: a wrong matmul must fail its check."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from gpubox.bench import payload  # noqa: E402
from gpubox.bench.peaks import peak_for  # noqa: E402
from gpubox.bench.suite import beside_peaks  # noqa: E402


def _inputs(n: int = 64, dtype=torch.float32):
    gen = torch.Generator().manual_seed(3)
    return (torch.randn(n, n, generator=gen).to(dtype), torch.randn(n, n, generator=gen).to(dtype))


@pytest.mark.parametrize("name", ["fp32", "bf16"])
def test_a_correct_matmul_passes_its_check(name):
    a, b = _inputs(dtype=payload.DTYPES[name])
    checked = payload.check_matmul(name, a, b, a @ b)
    assert checked["ok"] and checked["rel_error"] <= checked["bound"]


@pytest.mark.parametrize("name", ["fp32", "tf32", "fp16", "bf16"])
def test_a_wrong_matmul_fails_its_check(name):
    a, b = _inputs(dtype=torch.float32)
    wrong = a @ b.T  # a plausible mistake: the wrong operand layout
    assert not payload.check_matmul(name, a, b, wrong)["ok"]
    slightly = (a @ b) * 1.05  # 5 % off everywhere: more than any dtype's rounding
    assert not payload.check_matmul(name, a, b, slightly)["ok"]


def test_d2l_models_have_the_book_shapes():
    assert payload.lenet()(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    net = payload.resnet18()
    assert net(torch.zeros(2, 1, 96, 96)).shape == (2, 10)
    # D2L's ResNet-18 for one-channel input: about 11.2 M parameters.
    assert 11.0e6 < sum(p.numel() for p in net.parameters()) < 11.4e6


@pytest.mark.parametrize(
    ("name", "model", "memory"),
    [
        ("Tesla T4", "T4", 320.0),
        ("NVIDIA A10G", "A10G", 600.0),
        ("NVIDIA L4", "L4", 300.0),
        ("NVIDIA L40S", "L40S", 864.0),
        ("NVIDIA A100-SXM4-40GB", "A100", 1555.0),
        ("NVIDIA A100-SXM4-80GB", "A100-SXM4-80GB", 2039.0),
        ("NVIDIA H100 80GB HBM3", "H100", 3350.0),
        ("NVIDIA H200", "H200", 4800.0),
    ],
)
def test_every_catalog_gpu_has_its_datasheet_peak(name, model, memory):
    peak = peak_for(name)
    assert peak is not None and peak.model == model and peak.memory_gbps == memory


def test_figures_are_shown_as_a_percentage_of_the_peak():
    raw = {
        "device": {"kind": "cuda", "name": "NVIDIA A10G", "count": 1},
        "matmul": {"bf16": {"tflops": 62.5, "ok": True}},
        "memory": {"copy_gbps": 480.0, "h2d_gbps": None},
    }
    shown = beside_peaks(raw)
    assert shown["bf16"] == {"measured": 62.5, "peak": 125.0, "percent": 50.0}
    assert shown["copy"]["percent"] == pytest.approx(80.0)
    assert shown["h2d"]["percent"] is None
    cpu = beside_peaks({**raw, "device": {"kind": "cpu", "name": "AMD EPYC"}})
    assert cpu["bf16"]["peak"] is None and peak_for("AMD EPYC") is None
