"""gpubox.setup's side of the bootstrap: the one step list, markers, the probe, disk full."""

from __future__ import annotations

import re
import shutil
import subprocess
from importlib import resources

import pytest

from gpubox import setup
from gpubox.errors import SetupFailed
from gpubox.remote.runner import LocalRunner

SCRIPT = resources.files("gpubox").joinpath("remote", "scripts", "bootstrap.sh")


def test_the_scripts_step_order_is_setups_step_list():
    match = re.search(r"^STEPS=\(([^)]*)\)$", SCRIPT.read_text(), flags=re.MULTILINE)
    assert match, "bootstrap.sh must declare STEPS=(...)"
    assert tuple(match.group(1).split()) == setup.STEPS
    for step in setup.STEPS:
        assert f"\nstep_{step}() {{" in SCRIPT.read_text()


def test_the_box_environment_gpubox_run_uses_is_the_one_the_bootstrap_makes():
    text = SCRIPT.read_text()
    dirs = dict(re.findall(r'^(GPUBOX_DIR|VENV)="([^"]*)"', text, flags=re.MULTILINE))
    assert dirs["VENV"].replace("$GPUBOX_DIR", dirs["GPUBOX_DIR"]) == setup.BOX_ENV


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_bootstrap_passes_shellcheck():
    with resources.as_file(SCRIPT) as path:
        out = subprocess.run(["shellcheck", "-S", "warning", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout


def test_markers_become_step_events_and_other_lines_do_not():
    event = setup.parse_marker(
        "::gpubox step=framework status=done seconds=41.250 msg=pytorch 2.5.1 (cu124)"
    )
    assert event == setup.StepEvent("framework", "done", 41.25, "pytorch 2.5.1 (cu124)")
    assert setup.parse_marker("::gpubox step=d2l status=start seconds=0.000") == setup.StepEvent(
        "d2l", "start", 0.0, ""
    )
    assert setup.parse_marker("Collecting torch") is None
    assert setup.parse_marker("::gpubox step=x status=exploded seconds=1") is None


def test_probe_reads_home_python_root_and_disk_of_this_host(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    facts = setup.probe(LocalRunner())
    assert facts.home == str(tmp_path)
    assert re.fullmatch(r"3\.\d+\.\d+", facts.python)
    assert facts.disk_free_gb is not None and facts.disk_free_gb > 0
    assert facts.cuda is None  # no NVIDIA driver on this machine


def test_env_file_keeps_the_token_off_the_command_line(tmp_path, monkeypatch, settings):
    monkeypatch.setenv("HOME", str(tmp_path))
    from gpubox import frameworks

    plan = frameworks.install_plan("pytorch", None, settings)
    env = setup.script_env(settings, plan, "s3cret")
    setup.copy_files(LocalRunner(), settings, "s3cret", env)
    env_file = tmp_path / ".gpubox/bootstrap.env"
    assert env_file.stat().st_mode & 0o777 == 0o600
    assert "GPUBOX_JUPYTER_TOKEN=s3cret" in env_file.read_text()
    assert (tmp_path / ".gpubox/bootstrap.sh").stat().st_mode & 0o111
    assert (tmp_path / ".gpubox/getting-started.ipynb").is_file()


def _mount_tmpfs(path, size_mb: int) -> bool:
    path.mkdir()
    return subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)], capture_output=True
    ).returncode == 0


@pytest.mark.slow
def test_disk_full_during_install_names_disk_space(tmp_path, monkeypatch):
    from tests.test_bootstrap import REAL_UV_CACHE, TORCH_WHEEL, free_port, host_settings

    if not TORCH_WHEEL.is_file():
        pytest.skip("needs the torch CPU wheel in /opt/wheels")
    home = tmp_path / "small-disk"
    if not _mount_tmpfs(home, 60):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        monkeypatch.setenv("HOME", str(home))
        monkeypatch.setenv("UV_CACHE_DIR", REAL_UV_CACHE)
        settings = host_settings(
            tmp_path / "gh", f"http://127.0.0.1:{free_port()}", free_port()
        )
        with pytest.raises(SetupFailed) as err:
            setup.run_setup(LocalRunner(), settings, box_name="full1")
        # "python" where uv must first be installed into the small disk (no uv on PATH),
        # "framework" where uv is there: either way an install that ran out of space.
        assert err.value.step in ("python", "framework")
        assert "No space left on device" in err.value.log_tail
        assert "disk is full" in err.value.message
        assert "disk is full" in err.value.hint
    finally:
        subprocess.run(["umount", "-l", str(home)], check=False)
