"""`bench`, `bench compare` and `scale` through the real command on the local provider.

The "box" is this machine with its own HOME under tmp_path; its framework environment
(~/.gpubox/venv, what `gpubox up` makes) is a real venv that sees this Python's
packages, torch among them, whether or not this Python is itself in a venv.
Everything is measured for real on the CPU, at --quick sizes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.venvs import venv_seeing_this_python

pytest.importorskip("torch")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def host(tmp_path, monkeypatch):
    """This machine as a gpubox local box called 'here', with a framework environment."""
    home = tmp_path / "host-home"
    venv_seeing_this_python(home / ".gpubox" / "venv")
    monkeypatch.setenv("HOME", str(home))
    assert gpubox("up", "here", "--provider", "local", "--no-setup").returncode == 0
    return home


def gpubox(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gpubox", *args],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, env=dict(os.environ),
        timeout=timeout,
    )


def test_bench_measures_this_machine_stores_it_and_compare_plots_it(host, tmp_path):
    assert "no benchmark results yet" in gpubox("bench", "compare").stderr

    done = gpubox("bench", "here", "--quick", "--json")
    assert done.returncode == 0, done.stderr
    rec = json.loads(done.stdout)
    suite = rec["suite"]
    assert (rec["box"], rec["provider"], rec["gpu_count"], rec["gpu_model"]) == (
        "here", "local", 0, None)
    assert rec["torch"].startswith("2.") and rec["price_per_hour"] is None
    assert rec["mode"] == "quick" and suite["quick"] is True
    assert suite["notes"] == ["no GPU: the suite ran on the CPU"]
    assert "tf32" in suite["skipped"] and "fp16" in suite["skipped"]
    assert all(m["ok"] and m["tflops"] > 0 for m in suite["matmul"].values())
    assert suite["memory"]["copy_gbps"] > 0 and suite["memory"]["h2d_gbps"] is None
    assert all(suite["training"][m]["images_per_s"] > 0 for m in ("lenet", "resnet18"))
    assert (host / ".gpubox" / "bench" / "payload.py").is_file()  # ran on the "box"

    compared = gpubox("bench", "compare", "--json")
    assert compared.returncode == 0, compared.stderr
    (row,) = json.loads(compared.stdout)
    assert row["box"] == "here" and row["images_per_s"] == suite["training"]["resnet18"]["images_per_s"]
    assert row["dollars_per_million_images"] is None  # this machine has no price
    assert row["mode"] == "quick"
    table = gpubox("bench", "compare")
    assert "quick" in table.stdout.splitlines()[1] and "gpubox price here" in table.stderr

    # Given a price (after the run), it is ranked in $ per unit of work like a cloud type.
    assert gpubox("price", "here", "0.03").returncode == 0
    (row,) = json.loads(gpubox("bench", "compare", "--json").stdout)
    images = suite["training"]["resnet18"]["images_per_s"]
    assert (row["price_per_hour"], row["price_source"]) == (0.03, "you")
    assert row["dollars_per_million_images"] == pytest.approx(0.03 / (images * 3600) * 1e6)
    assert row["dollars_per_pflop"] == pytest.approx(0.03 / (row["tflops"] * 3.6))

    png = tmp_path / "bench.png"
    plotted = gpubox("bench", "compare", "--plot", str(png))
    assert plotted.returncode == 0, plotted.stderr
    data = png.read_bytes()
    assert data[:8] == PNG_SIGNATURE and 5_000 < len(data) < 200_000
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width >= 400 and height >= 150


def test_plot_to_an_unwritable_path_is_one_clear_error(host, tmp_path):
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("")
    for path in (tmp_path / "missing" / "out.png", a_file / "out.png", Path("/proc/out.png")):
        done = gpubox("bench", "compare", "--plot", str(path))
        assert done.returncode != 0
        assert done.stderr.startswith("error: cannot write the plot to"), done.stderr
        assert "Traceback" not in done.stderr


@pytest.mark.slow  # two torchrun launches, each starting PyTorch in every process
def test_scale_runs_one_and_two_gloo_processes_through_real_torchrun(host):
    done = gpubox("scale", "here", "--gpus", "1,2", "--quick", "--json")
    assert done.returncode == 0, done.stderr
    rec = json.loads(done.stdout)
    assert rec["gpu_count"] == 0 and "cannot be measured" in rec["notes"][0]
    one, two = rec["points"]["cpu"]
    assert (one["count"], two["count"]) == (1, 2)
    assert {one["backend"], two["backend"]} == {"gloo"}
    assert one["speedup"] == pytest.approx(1.0) and one["busbw_gbps"] is None
    assert two["images_per_s"] > 0 and two["busbw_gbps"] > 0
    assert two["efficiency"] == pytest.approx(two["speedup"] / 2)


def test_scale_asking_for_more_than_the_box_has_is_a_clear_error(host):
    done = gpubox("scale", "here", "--gpus", "1,8", "--quick")
    assert done.returncode == 2
    assert "has no GPU" in done.stderr and "at most" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_box_without_pytorch_is_told_how_to_get_it(tmp_path, monkeypatch):
    home = tmp_path / "bare-home"
    # A real framework environment without torch: a fresh venv with no packages.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip",
                    str(home / ".gpubox" / "venv")], check=True)
    monkeypatch.setenv("HOME", str(home))
    assert gpubox("up", "bare", "--provider", "local", "--no-setup").returncode == 0
    done = gpubox("bench", "bare", "--quick")
    assert done.returncode != 0
    assert "no PyTorch in its framework environment" in done.stderr
    assert "gpubox up" in done.stderr and "Traceback" not in done.stderr
