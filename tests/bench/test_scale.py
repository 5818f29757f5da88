"""scale's choices and arithmetic; the real torchrun runs are in test_bench_local.py."""

from __future__ import annotations

import pytest

from gpubox.bench import scale
from gpubox.errors import InvalidInput


def test_a_one_gpu_box_refuses_three_gpus_and_says_what_it_has():
    with pytest.raises(InvalidInput, match="'box1' has 1 GPU") as caught:
        scale.choose_counts([3], gpus=1, cpus=4, box="box1")
    assert "multi-GPU type" in caught.value.hint


def test_a_one_gpu_box_runs_one_gpu_and_exercises_the_path_on_the_cpu():
    gpu, cpu, notes = scale.choose_counts(None, gpus=1, cpus=4, box="box1")
    assert (gpu, cpu) == ([1], [1, 2, 3, 4])
    assert "one GPU" in notes[0] and "cannot be measured" in notes[0]


def test_a_multi_gpu_box_runs_powers_of_two_up_to_all_and_always_one():
    assert scale.choose_counts(None, gpus=8, cpus=96, box="b")[:2] == ([1, 2, 4, 8], [])
    assert scale.choose_counts(None, gpus=6, cpus=96, box="b")[0] == [1, 2, 4, 6]
    assert scale.choose_counts([4, 8], gpus=8, cpus=96, box="b")[0] == [1, 4, 8]
    with pytest.raises(InvalidInput, match="has 4 GPUs"):
        scale.choose_counts([1, 8], gpus=4, cpus=48, box="b")


@pytest.mark.parametrize("text", ["1,x", "0,2", ""])
def test_bad_gpu_lists_are_refused(text):
    with pytest.raises(InvalidInput):
        scale.parse_counts(text)


def test_speedup_and_efficiency_are_against_one_process():
    runs = [
        {"world": w, "device": "cuda", "backend": "nccl", "model": "resnet18",
         "images_per_s": ips, "allreduce": {"busbw_gbps": bw}}
        for w, ips, bw in ((1, 1000.0, 0.0), (2, 1900.0, 90.0), (4, 3600.0, 150.0))
    ]
    one, two, four = scale._points(runs)
    assert (one.speedup, one.busbw_gbps) == (1.0, None)
    assert two.speedup == pytest.approx(1.9) and two.efficiency == pytest.approx(0.95)
    assert four.speedup == pytest.approx(3.6) and four.efficiency == pytest.approx(0.9)
    assert four.busbw_gbps == 150.0


def test_bus_bandwidth_is_the_nccl_tests_formula():
    pytest.importorskip("torch")
    from gpubox.bench.payload_ddp import bus_bandwidth

    # 1 GB in 0.1 s on 8 ranks: algbw 10 GB/s, busbw 10 x 2 x 7 / 8 = 17.5 GB/s.
    assert bus_bandwidth(10**9, 0.1, 8) == pytest.approx((10.0, 17.5))
    assert bus_bandwidth(10**9, 0.1, 1)[1] == 0.0
