"""The real bootstrap.sh, driven by gpubox.setup.run_setup through the real LocalRunner.

The "host" is this machine with HOME pointed at a temporary folder: real uv, real
wheels (torch 2.13.0 CPU from /opt/wheels, served as a torch index on 127.0.0.1),
the notebooks zip from a local http.server, a real Jupyter. The expensive install
happens once per session (`bootstrapped`); uv's shared cache makes the few other
fresh hosts quick. The only hand-made fake is the `nvidia-smi` of the GPU test:
no real GPU exists on this machine.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import io
import json
import os
import pwd
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from gpubox import config, setup
from gpubox.errors import SetupFailed
from gpubox.remote.runner import LocalRunner

TORCH_WHEEL = Path("/opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl")
# uv's cache of the real user: a temporary HOME would otherwise start it cold. From the
# account's home folder (pwd), not $HOME, so that it is the same whatever HOME runs the tests.
REAL_UV_CACHE = os.environ.get("UV_CACHE_DIR") or str(
    Path(pwd.getpwuid(os.getuid()).pw_dir) / ".cache" / "uv"
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not TORCH_WHEEL.is_file(), reason="needs the torch CPU wheel in /opt/wheels"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def serve(directory: Path):
    """An http.server on 127.0.0.1 serving `directory`; yields its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def make_site(root: Path) -> None:
    """A torch index with the CPU wheel (PEP 503 layout) and the book's notebooks zip."""
    project = root / "whl" / "cpu" / "torch"
    project.mkdir(parents=True)
    (project / TORCH_WHEEL.name).symlink_to(TORCH_WHEEL)
    href = TORCH_WHEEL.name.replace("+", "%2B")
    (project / "index.html").write_text(f'<html><body><a href="{href}">{TORCH_WHEEL.name}</a>')
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        nb = json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5})
        zf.writestr("pytorch/chapter_preliminaries/ndarray.ipynb", nb)
        zf.writestr("pytorch/index.ipynb", nb)
        zf.writestr("mxnet/chapter_preliminaries/ndarray.ipynb", nb)
    (root / "d2l-en.zip").write_bytes(buf.getvalue())


def host_settings(gpubox_home: Path, base_url: str, port: int, **overrides) -> config.Settings:
    """Settings whose every URL is on 127.0.0.1."""
    settings = config.load({"GPUBOX_HOME": str(gpubox_home)})
    values = dict(
        notebooks_url=f"{base_url}/d2l-en.zip",
        torch_index_url=f"{base_url}/whl",
        pip_find_links="/opt/wheels",
        framework_packages="torch==2.13.0",
        jupyter_port=port,
        idle_stop_minutes=0,  # never let a test schedule a real shutdown of this machine
    )
    values.update(overrides)
    return settings.with_overrides(**values)


@contextlib.contextmanager
def as_host(home: Path, path_prefix: str | None = None):
    """HOME (and PATH) of the 'host' while the bootstrap runs; restored after."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(home))
        mp.setenv("UV_CACHE_DIR", REAL_UV_CACHE)
        if path_prefix:
            mp.setenv("PATH", f"{path_prefix}:{os.environ['PATH']}")
        yield


def kill_host_servers(home: Path) -> None:
    """Kill the Jupyter (and any idle loop) a bootstrap started under `home`, by PID."""
    for pidfile in (home / ".gpubox/state/jupyter.pid", home / ".gpubox/state/idle-loop.json"):
        if not pidfile.is_file():
            continue
        text = pidfile.read_text().strip()
        pid = json.loads(text)["pid"] if text.startswith("{") else int(text)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        for _ in range(50):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)


def jupyter_status(port: int, token: str | None) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/status")
    if token:
        request.add_header("Authorization", f"token {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


@dataclass
class Host:
    home: Path
    settings: config.Settings
    base_url: str
    result: setup.SetupResult

    def run(self, **overrides) -> setup.SetupResult:
        settings = self.settings.with_overrides(**overrides) if overrides else self.settings
        with as_host(self.home):
            return setup.run_setup(LocalRunner(), settings, box_name="box1")


@pytest.fixture(scope="session")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    make_site(root)
    with serve(root) as base_url:
        yield base_url


@pytest.fixture(scope="session")
def bootstrapped(tmp_path_factory, site):
    """One host set up from nothing, once per session: the expensive part."""
    home = tmp_path_factory.mktemp("host-home")
    settings = host_settings(tmp_path_factory.mktemp("gpubox-home"), site, free_port())
    try:
        with as_host(home):
            result = setup.run_setup(LocalRunner(), settings, box_name="box1")
        yield Host(home, settings, site, result)
    finally:
        kill_host_servers(home)


def test_fresh_host_runs_every_step_in_order_and_ends_with_jupyter(bootstrapped):
    result = bootstrapped.result
    assert [e.step for e in result.events if e.status == "start"] == list(setup.STEPS)
    assert result.finished("python").status == "done"
    assert result.finished("framework").status == "done"
    assert "2.13.0+cpu" in result.finished("framework").msg
    assert result.finished("d2l").status == "done"
    assert result.finished("jupyter").status == "done"
    assert "no NVIDIA GPU" in result.finished("driver").msg


def test_the_framework_came_from_the_torch_index_of_the_cpu_build(bootstrapped):
    log = (bootstrapped.home / ".gpubox/logs/framework.log").read_text()
    assert f"--extra-index-url {bootstrapped.base_url}/whl/cpu" in log
    assert "could not be used" not in bootstrapped.result.finished("framework").msg


def test_cpu_host_device_check_runs_on_the_cpu_and_says_so(bootstrapped):
    device = bootstrapped.result.device
    assert device["ok"] is True
    assert device["device"] == "cpu"
    assert device["sum"] == 1024 * 1024
    assert "no GPU" in bootstrapped.result.finished("device").msg
    saved = json.loads((bootstrapped.home / ".gpubox/state/device.json").read_text())
    assert saved == device


def test_d2l_imports_in_the_venv(bootstrapped):
    import subprocess

    venv_python = bootstrapped.home / ".gpubox/venv/bin/python"
    out = subprocess.run(
        [str(venv_python), "-c", "import d2l, numpy, torch; print(torch.zeros(2).sum().item())"],
        capture_output=True, text=True, check=True,
    )
    assert out.stdout.strip() == "0.0"


def test_notebooks_of_the_framework_and_the_getting_started_one_are_in_d2l(bootstrapped):
    d2l = bootstrapped.home / "d2l"
    assert (d2l / "pytorch/chapter_preliminaries/ndarray.ipynb").is_file()
    assert not (d2l / "mxnet").exists()
    assert (d2l / "getting-started.ipynb").is_file()


def test_jupyter_answers_with_the_token_and_refuses_without(bootstrapped):
    port = bootstrapped.settings.jupyter_port
    token = setup.jupyter_token(bootstrapped.settings, "box1")
    assert jupyter_status(port, token) == 200
    assert jupyter_status(port, None) == 403


def test_jupyter_listens_on_loopback_only_and_the_token_is_not_on_its_command_line(bootstrapped):
    pid = int((bootstrapped.home / ".gpubox/state/jupyter.pid").read_text())
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    token = setup.jupyter_token(bootstrapped.settings, "box1")
    assert "--ServerApp.ip=127.0.0.1" in cmdline
    assert not any(token in arg for arg in cmdline)
    config_file = bootstrapped.home / ".gpubox/jupyter_config.json"
    assert config_file.stat().st_mode & 0o077 == 0


def test_second_run_skips_every_step(bootstrapped):
    again = bootstrapped.run()
    assert again.skipped_all, [(e.step, e.status, e.msg) for e in again.events]
    assert again.device["ok"] is True


def test_a_notebook_the_user_changed_is_never_overwritten(bootstrapped):
    mine = bootstrapped.home / "d2l/pytorch/index.ipynb"
    mine.write_text('{"mine": true}')
    # Forget that the notebooks step ran, so it unpacks the zip again.
    (bootstrapped.home / ".gpubox/state/notebooks").unlink()
    again = bootstrapped.run()
    assert again.finished("notebooks").status == "done"
    assert "kept" in again.finished("notebooks").msg
    assert mine.read_text() == '{"mine": true}'


def test_unreachable_notebooks_url_is_one_line_and_setup_goes_on(bootstrapped):
    dead = f"http://127.0.0.1:{free_port()}/d2l-en.zip"
    seen: list[str] = []
    with as_host(bootstrapped.home):
        result = setup.run_setup(
            LocalRunner(),
            bootstrapped.settings.with_overrides(notebooks_url=dead),
            box_name="box1",
            on_event=lambda e: seen.append(f"{e.step} {e.status} {e.msg}"),
        )
    notebooks = result.finished("notebooks")
    assert notebooks.status == "done"
    assert notebooks.msg.startswith(f"could not download the book's notebooks from {dead}")
    assert "\n" not in notebooks.msg
    assert (bootstrapped.home / "d2l/getting-started.ipynb").is_file()
    assert result.finished("jupyter").status == "skip"
    bootstrapped.run()  # back to the reachable URL for the other tests


def test_jupyter_port_taken_by_another_program_fails_naming_port_and_setting(bootstrapped):
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        taken = other.getsockname()[1]
        with pytest.raises(SetupFailed) as err:
            bootstrapped.run(jupyter_port=taken)
    assert err.value.step == "jupyter"
    assert f"port {taken}" in err.value.message
    assert "jupyter_port" in err.value.message
    assert err.value.log_path.endswith("/.gpubox/logs/jupyter.log")
    assert err.value.message.count(f"port {taken} on the host is taken") == 1
    # The failed run stopped nothing: the session's Jupyter answers on its own port.
    port = bootstrapped.settings.jupyter_port
    assert jupyter_status(port, setup.jupyter_token(bootstrapped.settings, "box1")) == 200
    assert bootstrapped.run().finished("jupyter").status == "skip"


def test_fake_gpu_without_a_gpu_build_fails_the_device_check_loudly(tmp_path, site):
    # The one hand-made fake: an `nvidia-smi` that reports a driver, because no
    # real GPU exists here. torch then does not see a GPU and the check must fail.
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    smi = fake_bin / "nvidia-smi"
    smi.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "--query-gpu=name" ]; then echo "NVIDIA H100 80GB HBM3"; exit 0; fi\n'
        'echo "| NVIDIA-SMI 550.54.15   Driver Version: 550.54.15   CUDA Version: 12.4 |"\n'
    )
    smi.chmod(0o755)
    home = tmp_path / "home"
    home.mkdir()
    settings = host_settings(tmp_path / "gh", site, free_port())
    with as_host(home, path_prefix=str(fake_bin)), pytest.raises(SetupFailed) as err:
        setup.run_setup(LocalRunner(), settings, box_name="gpu1")
    assert err.value.step == "device"
    assert "does not use it" in err.value.message
    device = json.loads((home / ".gpubox/state/device.json").read_text())
    assert device["expected_gpu"] is True and device["ok"] is False
    # The plan followed the fake driver's CUDA: the cu124 index was asked first.
    assert "/whl/cu124" in (home / ".gpubox/logs/framework.log").read_text()
    assert not (home / ".gpubox/state/jupyter.pid").exists()


def test_failed_step_raises_setup_failed_with_its_name_log_tail_and_path(tmp_path, site):
    home = tmp_path / "home"
    home.mkdir()
    settings = host_settings(
        tmp_path / "gh", site, free_port(),
        framework_packages="/nonexistent/torch-2.13.0-cp311-cp311-linux_x86_64.whl",
    )
    with as_host(home), pytest.raises(SetupFailed) as err:
        setup.run_setup(LocalRunner(), settings, box_name="bad1")
    assert err.value.step == "framework"
    assert err.value.log_path == f"{home}/.gpubox/logs/framework.log"
    assert "/nonexistent/torch" in err.value.log_tail
    assert err.value.log_path in err.value.hint
    assert not (home / ".gpubox/state/framework").exists()


def test_a_spot_box_runs_the_interruption_watcher_and_stop_ends_it(bootstrapped, monkeypatch):
    # The watcher asks the instance-metadata address; here a closed port on 127.0.0.1.
    monkeypatch.setenv("GPUBOX_IMDS_URL", "http://127.0.0.1:9")
    pidfile = bootstrapped.home / ".gpubox/state/spot-watch.pid"
    with as_host(bootstrapped.home):
        setup.run_setup(LocalRunner(), bootstrapped.settings, box_name="box1", spot=True)
        pid = int(pidfile.read_text())
        assert "spot_watch.py" in Path(f"/proc/{pid}/cmdline").read_text()
        assert setup.stop_services(LocalRunner()) is True
    assert not pidfile.exists()
    for _ in range(50):
        status = Path(f"/proc/{pid}/status")
        if not status.exists() or "\nState:\tZ" in status.read_text():
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the spot watcher is still running")
    # Jupyter went with it; the next run starts it again (the other tests share this host).
    assert not (bootstrapped.home / ".gpubox/state/jupyter.pid").exists()
    assert bootstrapped.run().finished("jupyter").status == "done"


def test_the_box_jupyter_serves_the_idle_warning_banner_and_the_agent_knows_the_box_name(
    bootstrapped,
):
    """The bootstrap installed the notice extension into the venv and Jupyter loaded it
    (the browser side is in tests/agent/test_jupyter_notice.py)."""
    port = bootstrapped.settings.jupyter_port
    token = setup.jupyter_token(bootstrapped.settings, "box1")
    request = urllib.request.Request(f"http://127.0.0.1:{port}/gpubox/notice")
    request.add_header("Authorization", f"token {token}")
    with urllib.request.urlopen(request, timeout=5) as response:
        assert json.loads(response.read())["notice"] is None  # nothing to warn about yet
    lab = (bootstrapped.home / ".gpubox/venv/share/jupyter/labextensions/gpubox-notice")
    assert (lab / "package.json").is_file()
    config = json.loads((bootstrapped.home / ".gpubox/state/idle-config.json").read_text())
    assert config["box_name"] == "box1"
