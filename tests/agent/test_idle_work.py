"""What the idle agent counts as work, read from real parts: a real Jupyter server with
real kernels (one computing, one blocked on input()), a real JupyterLab terminal typed
into over its websocket, real processes burning the CPU, real gpubox-keep markers and
a planted nvidia-smi that fails as a broken driver does.

The readings are real; the long durations (an hour's limit) go through the decision
with the clock moved on, since the decision takes `now`.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.agent.agent_modules import SCRIPT, decision, signals
from tests.agent.test_agent_real import (  # noqa: F401 (its real Jupyter and agent)
    TOKEN,
    Kernel,
    agent,
    jupyter,
    wait_for,
)
from tests.conftest import SUITE_LOGIN_UID
from tests.sshd import free_port

agent_files = importlib.import_module("agent_files")
keep = importlib.import_module("keep")

MIN = 60.0
# The suite's login user for the agent (no account has it): the "user of the box" that
# root runs a process as (tests/conftest.py; test_work_whose.py tries root and a real user).
PERSON_UID = SUITE_LOGIN_UID


@pytest.fixture
def box(tmp_path, monkeypatch):
    """The agent's files and HOME under tmp_path, as on a box."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("GPUBOX_AGENT_HOME", str(tmp_path / "agent-home"))
    monkeypatch.delenv("JUPYTER_RUNTIME_DIR", raising=False)
    return tmp_path


def settings(**over):
    # No Jupyter unless a test names one: the configured URL is a closed port.
    config = {**agent_files.DEFAULTS, "jupyter_url": f"http://127.0.0.1:{free_port()}"}
    config.update(over)
    return config


def two_looks(config):
    """Two polls a few seconds apart, as the timer makes them a minute apart: the second
    one's CPU shares are measured over the window between them."""
    signals.read_signals(config, time.time())
    time.sleep(3)
    now = time.time()
    return signals.read_signals(config, now), now


@pytest.mark.slow  # the real Jupyter server takes seconds to start
def test_a_kernel_computing_is_work_and_one_blocked_on_input_is_idle_after_the_limit(box, jupyter):  # noqa: F811
    config = settings(jupyter_runtime_dirs=[str(jupyter["runtime"])])
    computing, waiting = Kernel(jupyter), Kernel(jupyter)
    try:
        waiting.run("answer = input('your name? ')", allow_stdin=True)
        computing.run("import time\nt = time.time() + 15\nwhile time.time() < t: pass")
        wait_for(lambda: waiting.info()["execution_state"] == "busy")
        wait_for(lambda: computing.info()["execution_state"] == "busy")
        seen, now = two_looks(config)
    finally:
        computing.delete()
        waiting.delete()
    kernels = {k["id"]: k for k in seen["kernels"]}
    assert seen["unknown"] == []
    hot, stuck = kernels[computing.id[:8]], kernels[waiting.id[:8]]
    assert hot["state"] == stuck["state"] == "busy"
    # Over the busy bar (5% of a core): the loop gets what this shared 2-core machine gives it.
    assert hot["cpu_percent"] >= decision.KERNEL_CPU_PERCENT, hot
    assert stuck["cpu_percent"] < 5, stuck

    # An hour later, with the same readings: the computing kernel keeps the box...
    state, actions = decision.decide(settings(), {"last_active": now}, seen, now + 61 * MIN)
    assert actions == [] and state["busy"] == [f"kernel {computing.id[:8]} running a cell "
                                               f"({hot['cpu_percent']:.0f}% CPU)"]  # fmt: skip
    # ...the one waiting on input() since then does not (warned at 55m, as the timer would).
    only_stuck = {**seen, "kernels": [stuck]}
    warned = {"last_active": now, "warned_at": now + 55 * MIN}
    state, actions = decision.decide(settings(), warned, only_stuck, now + 61 * MIN)
    assert [kind for kind, _ in actions] == ["stop"] and state["busy"] == []


@pytest.mark.slow  # the real Jupyter server takes seconds to start
def test_typing_in_a_jupyterlab_terminal_counts_as_use(box, jupyter):  # noqa: F811
    import requests
    import websocket

    config = settings(jupyter_runtime_dirs=[str(jupyter["runtime"])])
    made = requests.post(jupyter["url"] + "/api/terminals", headers=jupyter["headers"], timeout=30)
    name = made.json()["name"]
    ws = websocket.create_connection(
        jupyter["url"].replace("http", "ws") + f"/terminals/websocket/{name}",
        header=[f"Authorization: token {TOKEN}"], timeout=30,
    )  # fmt: skip
    try:
        time.sleep(1.5)  # let the shell's prompt settle
        before = {t["name"]: t for t in signals.read_signals(config, time.time())["terminals"]}
        typed_at = time.time()
        ws.send(json.dumps(["stdin", "echo gpubox-typed-$((6*7))\r"]))
        out = ""
        while "gpubox-typed-42" not in out:
            kind, *rest = json.loads(ws.recv())
            out += rest[0] if kind == "stdout" else ""
        seen = signals.read_signals(config, time.time())
    finally:
        ws.close()
        requests.delete(f"{jupyter['url']}/api/terminals/{name}", headers=jupyter["headers"],
                        timeout=30)  # fmt: skip
    after = {t["name"]: t for t in seen["terminals"]}[name]
    assert after["last_activity"] > before[name]["last_activity"]
    assert after["last_activity"] >= typed_at - 1

    # The box was quiet for two hours before the typing: the typing restarts the count.
    state, actions = decision.decide(settings(), {"last_active": typed_at - 120 * MIN}, seen,
                                     typed_at + 30 * MIN)  # fmt: skip
    assert actions == [] and state["idle_seconds"] <= 30 * MIN + 5
    # A terminal left alone does not keep the box for ever (warned at 55m, as the timer would).
    warned = {"last_active": typed_at, "warned_at": typed_at + 55 * MIN}
    _, actions = decision.decide(settings(), warned, seen, typed_at + 61 * MIN)
    assert [kind for kind, _ in actions] == ["stop"]


def test_the_login_users_process_burning_cpu_is_work_a_sleeping_one_or_another_users_is_not(box):
    person = ["setpriv", f"--reuid={PERSON_UID}", f"--regid={PERSON_UID}", "--clear-groups"]
    burn = ["/bin/sh", "-c", "while :; do :; done"]
    started = [
        subprocess.Popen(person + burn),  # a `nohup python train.py` of the box's user
        subprocess.Popen(person + ["sleep", "60"]),  # the same user, not working
        subprocess.Popen(burn),  # root, here not the login user: not its work
        # A process that looks like a kernel (kernel-ID.json on its command line) which no
        # Jupyter server lists, as when its server died: judged like any other process.
        subprocess.Popen(person + burn + ["/tmp/kernel-0rphan00-0000.json"]),
    ]
    try:
        # The bar is 20% of a core; this shared 2-core machine may give the loop less.
        seen, now = two_looks(settings(process_cpu_percent=5))
    finally:
        for proc in started:
            proc.kill()
            proc.wait()
    working = {p["pid"]: p for p in seen["processes"]}
    burner, sleeper, root_burner, orphan = (p.pid for p in started)
    assert burner in working and working[burner]["cpu_percent"] >= 5
    assert working[burner]["uid"] == PERSON_UID and "while" in working[burner]["command"]
    assert working[burner]["whose"] == f"uid {PERSON_UID}'s, the login user's"
    assert sleeper not in working and root_burner not in working
    assert orphan in working

    only_burner = {**seen, "processes": [working[burner]]}
    state, actions = decision.decide(settings(), {"last_active": now}, only_burner, now + 61 * MIN)
    assert actions == [] and state["busy"][0].startswith(f"process {burner} at ")


def test_gpubox_keep_holds_while_its_command_runs_and_for_a_time_and_off_ends_it(box):
    bin_dir = box / "bin"
    os.environ["GPUBOX_KEEP_BIN_DIR"] = str(bin_dir)  # the isolation fixture restores it
    command = keep.install_command()
    assert command == str(bin_dir / "gpubox-keep") and os.access(command, os.X_OK)

    job = subprocess.Popen([command, "--", "sleep", "30"])
    try:
        # sh and python exec into the command: the marker's pid is the command's own.
        wanted = f"gpubox-keep while process {job.pid} runs (sleep 30)"
        assert wait_for(lambda: keep.live_markers(time.time()) == [wanted], timeout=20)
    finally:
        job.kill()
        job.wait()
    assert keep.live_markers(time.time()) == []
    assert not list((box / "agent-home" / "keep").glob("pid-*"))  # the dead marker is gone

    said = subprocess.run([command, "3h"], capture_output=True, text=True, check=True).stdout
    assert said.startswith("the box stays up until ")
    assert keep.live_markers(time.time())[0].startswith("gpubox-keep until ")
    assert keep.live_markers(time.time() + 3 * 3600 + 1) == []  # and not a second longer

    subprocess.run([command, "3h"], check=True, capture_output=True)
    said = subprocess.run([command, "off"], capture_output=True, text=True, check=True).stdout
    assert "no keep any more" in said and keep.live_markers(time.time()) == []

    bad = subprocess.run([command, "0"], capture_output=True, text=True)
    assert bad.returncode == 2 and "less than a minute" in bad.stderr


def test_a_keep_marker_of_a_reused_pid_or_another_boot_keeps_nothing(box):
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        marker = keep.keep_process(sleeper.pid, "sleep 60", time.time())
        assert len(keep.live_markers(time.time())) == 1
        folder = box / "agent-home" / "keep"
        # The same pid, but a process that started at another time: the pid was reused.
        reused = {**marker, "start": marker["start"] - 100}
        (folder / "pid-reused.json").write_text(json.dumps(reused))
        # The same process as far as pid and start go, but recorded in an earlier boot.
        other_boot = {**marker, "boot_id": "00000000-0000-0000-0000-000000000000"}
        (folder / "pid-other-boot.json").write_text(json.dumps(other_boot))
        assert keep.live_markers(time.time()) == [f"gpubox-keep while process {sleeper.pid} runs (sleep 60)"]
        assert not (folder / "pid-reused.json").exists()
        assert not (folder / "pid-other-boot.json").exists()
    finally:
        sleeper.send_signal(signal.SIGKILL)
        sleeper.wait()
    assert keep.live_markers(time.time()) == []  # its process is gone


def test_a_broken_gpu_driver_is_unknown_and_the_box_still_stops_within_twice_its_limit(box, monkeypatch):
    fake = box / "fake-bin"
    fake.mkdir()
    smi = fake / "nvidia-smi"
    # What nvidia-smi prints after an unattended upgrade split the driver from its library.
    smi.write_text("#!/bin/sh\necho 'Failed to initialize NVML: Driver/library version mismatch'\n"
                   "echo 'NVML library version: 550.127'\nexit 18\n")  # fmt: skip
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    gpus, error = signals.read_gpu_utilisation()
    assert gpus is None
    assert error.startswith("GPU: nvidia-smi failed (exit 18): Failed to initialize NVML")

    # The agent itself says so in its status.
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"}
    stops = box / "stops.txt"
    for args in (["install", "--idle-minutes", "60", "--mode", "none", "--stop-command",
                  f"echo stopped >> {stops}", "--jupyter-url", f"http://127.0.0.1:{free_port()}"],
                 ["check"]):  # fmt: skip
        subprocess.run([sys.executable, str(SCRIPT), *args], env=env, check=True,
                       capture_output=True, timeout=60)  # fmt: skip
    status = json.loads(subprocess.run([sys.executable, str(SCRIPT), "status"], env=env,
                                       check=True, capture_output=True, text=True).stdout)  # fmt: skip
    assert [u for u in status["unknown"] if "Failed to initialize NVML" in u]
    assert status["busy"] == [] and not stops.exists()

    # A week of the same reading, a poll a minute: warned at 115m, stopped at 120m.
    start = time.time()
    seen = signals.read_signals(settings(), start)
    state, done, now = {"last_active": start}, [], start
    while now <= start + 7 * 24 * 60 * MIN and not any(kind == "stop" for _, kind in done):
        state, actions = decision.decide(settings(), state, seen, now)
        done += [(now - start, kind) for kind, _ in actions]
        now += MIN
    assert done == [(115 * MIN, "warn"), (120 * MIN, "stop")]


@pytest.mark.slow  # the real Jupyter server takes seconds to start
def test_an_unreadable_process_table_or_a_refused_jupyter_is_unknown(box, jupyter):  # noqa: F811
    # Jupyter that answers, but not to us (no token): it might hide a running cell.
    now = time.time()
    seen = signals.read_signals(settings(jupyter_url=jupyter["url"], proc_dir=str(box / "no-proc")),
                                now)  # fmt: skip
    assert f"Jupyter at {jupyter['url']}: HTTP 403" in seen["unknown"]
    assert [u for u in seen["unknown"] if u.startswith("processes: cannot read the process table")]
    _, actions = decision.decide(settings(), {"last_active": now}, seen, now + 116 * MIN)
    assert actions[0][0] == "warn" and "twice as long" in actions[0][1]


@pytest.mark.slow  # the real Jupyter server of the agent fixture takes seconds to start
def test_the_running_agent_leaves_a_box_up_while_a_cpu_job_or_a_keep_runs_then_stops_it(
    agent,  # noqa: F811
):
    """The agent's own loop, real time, a 3 s limit: work holds the box, its end lets it stop."""
    from tests.agent.agent_modules import AGENT_DIR

    person = ["setpriv", f"--reuid={PERSON_UID}", f"--regid={PERSON_UID}", "--clear-groups"]
    job = subprocess.Popen(person + ["/bin/sh", "-c", "while :; do :; done"])  # nohup train.py
    try:
        agent.install(minutes=0.05, warn=0.02, mode="loop", poll=0.5)
        agent.configure(process_cpu_percent=5)  # what this shared 2-core machine gives a loop
        time.sleep(8)
        assert not agent.stops.exists()
    finally:
        job.kill()
        job.wait()
    wait_for(agent.stops.exists, timeout=30)

    kept = subprocess.Popen([sys.executable, str(AGENT_DIR / "keep.py"), "--", "sleep", "8"],
                            env=agent.env)  # fmt: skip
    try:
        wait_for(lambda: list((agent.home / "keep").glob("pid-*.json")), timeout=10)
        agent.stops.unlink()
        agent.install(minutes=0.05, warn=0.02, mode="loop", poll=0.5)
        agent.configure(process_cpu_percent=5)
        time.sleep(5)
        assert not agent.stops.exists()
    finally:
        kept.wait(timeout=30)
    wait_for(agent.stops.exists, timeout=30)
