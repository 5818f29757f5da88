"""compare's cost arithmetic, ordering and plot, from results kept in the real State."""

from __future__ import annotations

import pytest

from gpubox.bench import compare
from gpubox.bench.suite import SUITE, record
from gpubox.errors import GpuboxError, NotFound
from gpubox.providers.base import Box, BoxState
from gpubox.state import State


def raw(gpu: str | None, *, bf16: float | None, fp32: float, images: float,
        quick: bool = False) -> dict:
    matmul = {"fp32": {"n": 8192, "tflops": fp32, "ok": True, "rel_error": 1e-7, "bound": 1e-4}}
    if bf16 is not None:
        matmul["bf16"] = {"n": 8192, "tflops": bf16, "ok": True, "rel_error": 1e-3, "bound": 3e-2}
    device = ({"kind": "cuda", "name": gpu, "count": 1, "cuda": "12.4", "driver": "550.1",
               "torch": "2.13.0"} if gpu else {"kind": "cpu", "name": "EPYC", "cpu": "EPYC",
                                                "count": 0, "torch": "2.13.0"})
    return {"device": device, "matmul": matmul, "quick": quick,
            "memory": {"copy_gbps": 500.0, "h2d_gbps": 20.0},
            "training": {"lenet": {"images_per_s": 50_000.0},
                         "resnet18": {"images_per_s": images}}}


def box(name: str, type_: str | None, provider: str = "aws") -> Box:
    return Box(name=name, provider=provider, state=BoxState.RUNNING, type=type_, region="us-east-1")


@pytest.fixture
def state(settings):
    s = State(settings.state_path)
    yield s
    s.close()


def test_cost_per_unit_of_work_is_price_over_work_per_hour():
    # $1/h for 1000 images/s = 3.6 M images per hour: $0.2778 per million.
    assert compare.per_million_images(1.0, 1000.0) == pytest.approx(1 / 3.6)
    # $1/h at 100 TFLOPS = 360 PFLOP per hour.
    assert compare.per_pflop(1.0, 100.0) == pytest.approx(1 / 360)
    assert compare.per_million_images(None, 1000.0) is None
    assert compare.per_pflop(1.0, 0.0) is None


def test_compare_sorts_by_value_for_money_and_falls_back_to_fp32(state):
    # A T4 has no bf16: its $/PFLOP is at fp32.
    state.save_bench("t4", "g4dn.xlarge", SUITE,
                     record(box("t4", "g4dn.xlarge"), raw("Tesla T4", bf16=None, fp32=8.0,
                                                          images=1000.0), 0.526))
    state.save_bench("a10", "g5.xlarge", SUITE,
                     record(box("a10", "g5.xlarge"), raw("NVIDIA A10G", bf16=70.0, fp32=30.0,
                                                         images=4000.0), 1.006))
    state.save_bench("here", "this machine", SUITE,
                     record(box("here", "this machine", "local"),
                            raw(None, bf16=0.3, fp32=0.2, images=5.0), None))
    rows = compare.rows(state.bench_results(SUITE))
    assert [r.box for r in rows] == ["a10", "t4", "here"]
    a10, t4, here = rows
    assert a10.dollars_per_million_images == pytest.approx(1.006 / (4000 * 3600) * 1e6)
    assert a10.matmul_dtype == "bf16" and a10.dollars_per_pflop == pytest.approx(1.006 / (70 * 3.6))
    assert t4.matmul_dtype == "fp32" and t4.dollars_per_pflop == pytest.approx(0.526 / (8 * 3.6))
    assert here.dollars_per_million_images is None and here.device == "CPU: EPYC"


def test_a_local_box_with_a_price_ranks_beside_cloud_types(state):
    # This machine at $0.03/h (its electricity, say): 5 images/s costs $1.67 per million,
    # between an A10G ($0.07) and a box without a price.
    cloud = record(box("a10", "g5.xlarge"),
                   raw("NVIDIA A10G", bf16=70.0, fp32=30.0, images=4000.0), 1.006, "snapshot")
    here = record(box("here", "this machine", "local"),
                  raw(None, bf16=0.3, fp32=0.2, images=5.0), 0.03, "you")
    lab = record(box("lab", "ssh host", "ssh"), raw(None, bf16=0.5, fp32=0.4, images=9.0), None)
    for rec in (lab, here, cloud):
        state.save_bench(rec["box"], rec["type"], SUITE, rec)
    rows = compare.rows(state.bench_results(SUITE))
    assert [r.box for r in rows] == ["a10", "here", "lab"]
    assert rows[1].dollars_per_million_images == pytest.approx(0.03 / (5 * 3600) * 1e6)
    assert rows[1].dollars_per_pflop == pytest.approx(0.03 / (0.3 * 3.6))
    assert (rows[1].price_source, rows[1].free) == ("you", False)
    assert rows[2].price_per_hour is None and rows[2].dollars_per_million_images is None

    # The price the boxes have now (set after the runs with `gpubox price`) is the one
    # used; a box priced 0 is free, and ranks first: nothing per image, however slow.
    rows = compare.rows(state.bench_results(SUITE),
                        {("local", "here"): 0.0, ("ssh", "lab"): 0.2, ("ssh", "a10"): 9.0})
    assert [r.box for r in rows] == ["here", "a10", "lab"]
    assert rows[0].free and rows[0].dollars_per_million_images == 0.0
    assert rows[2].price_per_hour == 0.2 and rows[2].price_source == "you"
    assert rows[1].price_per_hour == 1.006  # an AWS result keeps AWS's price


def test_a_quick_and_a_full_run_of_one_box_are_two_rows_that_say_which(state):
    for quick, images in ((True, 0.9), (False, 4.1)):
        rec = record(box("here", "this machine", "local"),
                     raw(None, bf16=0.3, fp32=0.2, images=images, quick=quick), 0.03, "you")
        assert rec["mode"] == ("quick" if quick else "full")
        state.save_bench("here", "this machine", SUITE, rec)
    full, quick = compare.rows(state.bench_results(SUITE))
    assert (full.mode, full.quick, quick.mode, quick.quick) == ("full", False, "quick", True)
    assert full.to_dict()["mode"] == "full"


def test_a_matmul_that_failed_its_check_is_not_priced(state):
    bad = raw("NVIDIA L4", bf16=100.0, fp32=30.0, images=2000.0)
    bad["matmul"]["bf16"]["ok"] = False
    state.save_bench("l4", "g6.xlarge", SUITE, record(box("l4", "g6.xlarge"), bad, 0.805))
    (row,) = compare.rows(state.bench_results(SUITE))
    assert row.matmul_dtype == "fp32" and row.tflops == 30.0


def test_compare_without_results_says_how_to_make_one(state):
    with pytest.raises(NotFound, match="no benchmark results yet") as caught:
        compare.rows(state.bench_results(SUITE))
    assert "gpubox bench NAME" in caught.value.hint


def test_plot_path_checks(tmp_path):
    with pytest.raises(GpuboxError, match="does not exist"):
        compare.check_writable(tmp_path / "nope" / "x.png")
    compare.check_writable(tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()  # the check leaves nothing behind


def test_the_plot_is_a_png_with_a_bar_per_result(state, tmp_path):
    for images in (1000.0, 1200.0):  # two runs on one box: two rows, two bars
        state.save_bench("t4", "g4dn.xlarge", SUITE,
                         record(box("t4", "g4dn.xlarge"),
                                raw("Tesla T4", bf16=None, fp32=8.0, images=images), 0.526))
    state.save_bench("here", "this machine", SUITE,
                     record(box("here", "this machine", "local"),
                            raw(None, bf16=0.3, fp32=0.2, images=5.0), None))
    state.save_bench("lab", "ssh host", SUITE,  # free, unpriced and priced rows all drawn
                     record(box("lab", "ssh host", "ssh"),
                            raw(None, bf16=0.3, fp32=0.2, images=7.0, quick=True), 0.0, "you"))
    table = compare.rows(state.bench_results(SUITE))
    out = compare.plot(table, tmp_path / "out.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and 5_000 < len(data) < 200_000
    height = int.from_bytes(data[20:24], "big")
    assert height > 0.6 * 80 * 4  # the figure grows with the number of results
