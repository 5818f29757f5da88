"""What a stop is: the uptime cap, pre_stop, and a stop command that fails.

The agent script runs for real (a subprocess, its files under tmp_path). Its clock is
a file (GPUBOX_AGENT_CLOCK) so hours pass in a moment; the stop command is a setting
that writes a file or fails the way `sudo -n shutdown` does without sudo.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests.agent.agent_modules import SCRIPT, decision
from tests.providers.aws.test_spot import imds  # noqa: F401 (a fixture)
from tests.sshd import free_port

stop_mod = __import__("idle_stop")


def test_the_cap_warns_then_stops_a_busy_box():
    config = {"idle_minutes": 60, "warn_minutes": 5, "gpu_threshold": 5.0, "enabled": True,
              "max_hours": 2, "box_name": "box1"}  # fmt: skip
    boot = 1_000_000.0
    busy = {"boot_time": boot, "gpu_utilisation": [97.0], "kernels": [], "ssh_sessions": []}

    def poll(state, now):
        state, actions = decision.decide(config, state, busy, now)
        state, capped = stop_mod.cap_actions(config, state, busy, now)
        return state, stop_mod.merge(actions, capped)

    state, actions = poll({}, boot + 3600)
    assert actions == []  # busy, and an hour under the cap
    state, actions = poll(state, boot + 2 * 3600 - 4 * 60)
    assert [kind for kind, _ in actions] == ["warn"]
    assert "stops in 4m" in actions[0][1] and "gpubox autostop box1 --max-hours off" in actions[0][1]
    state, actions = poll(state, boot + 2 * 3600 - 3 * 60)
    assert actions == []  # warned once
    state, actions = poll(state, boot + 2 * 3600 + 30)
    assert actions == [("stop", "up for 2h, the cap is 2h (max_hours)")]
    state, actions = poll(state, boot + 2 * 3600 + 90)
    assert actions == []  # asked already; the box is going down
    # Started again the next day: a fresh run, a fresh cap.
    later = {**busy, "boot_time": boot + 86400}
    state, actions = decision.decide(config, state, later, boot + 86400 + 60)
    state, capped = stop_mod.cap_actions(config, state, later, boot + 86400 + 60)
    assert capped == []


def test_no_cap_never_stops_a_busy_box():
    config = {"idle_minutes": 60, "warn_minutes": 5, "max_hours": None}
    signals = {"boot_time": 1.0}
    assert stop_mod.cap_actions(config, {}, signals, 10 * 86400)[1] == []


@pytest.fixture
def agent(tmp_path):
    """The agent script with its files, and its clock, under tmp_path."""
    home = tmp_path / "agent-home"
    clock = tmp_path / "clock"
    clock.write_text(str(time.time()))
    env = {**os.environ, "GPUBOX_AGENT_HOME": str(home), "GPUBOX_AGENT_CLOCK": str(clock),
           "HOME": str(tmp_path)}  # fmt: skip
    env.pop("GPUBOX_IDLE_STOP_COMMAND", None)

    def run(*args):
        done = subprocess.run([sys.executable, str(SCRIPT), *args], env=env,
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])

    def install(*extra, minutes="1"):
        dead = f"http://127.0.0.1:{free_port()}"
        return run("install", "--idle-minutes", minutes, "--mode", "none", "--jupyter-url", dead,
                   "--box-name", "box1", *extra)  # fmt: skip

    def advance(seconds):
        clock.write_text(str(float(clock.read_text()) + seconds))

    def log():
        return (home / "logs" / "idle.log").read_text()

    def check_until_stop():
        """Polls, ten minutes apart, until one stops: the idle decision may warn first."""
        for _ in range(3):
            result = run("check")
            if any(kind == "stop" for kind, _ in result["actions"]):
                return result
            advance(600)
        raise AssertionError("no stop in three polls")

    run.install, run.advance, run.log, run.home = install, advance, log, home
    run.check_until_stop = check_until_stop
    return run


def test_a_failed_stop_is_recorded_retried_and_cleared_by_one_that_works(agent, tmp_path):
    flag = tmp_path / "may-stop"
    stopped = tmp_path / "stopped"
    # Fails as `sudo -n shutdown` does for a user without passwordless sudo, until
    # the test allows it.
    command = (f"if [ -e {flag} ]; then echo stopped >> {stopped}; "
               f"else echo 'sudo: a password is required' >&2; exit 1; fi")  # fmt: skip
    agent.install("--stop-command", command)
    agent.advance(6 * 3600)
    agent.check_until_stop()
    status = agent("status")
    failed = status["stop_failed"]
    assert failed["ok"] is False and "a password is required" in failed["error"]
    assert "exited 1" in failed["error"] and "idle for" in failed["reason"]
    assert not stopped.exists()

    agent.advance(60)
    assert [kind for kind, _ in agent("check")["actions"]] == ["stop"]  # asked again
    assert agent.log().count("stop FAILED") == 2

    flag.write_text("")
    agent.advance(60)
    agent("check")
    assert stopped.read_text() == "stopped\n"
    status = agent("status")
    assert status["stop_failed"] is None and status["last_stop"]["ok"] is True


def test_pre_stop_runs_before_the_stop_and_its_output_is_kept(agent, tmp_path):
    order = tmp_path / "order"
    agent.install("--stop-command", f"echo stop >> {order}",
                  "--pre-stop", f"echo saving work; echo pre_stop >> {order}")  # fmt: skip
    agent.advance(6 * 3600)
    agent.check_until_stop()
    assert order.read_text() == "pre_stop\nstop\n"
    status = agent("status")
    assert status["pre_stop"]["exit_code"] == 0
    assert status["pre_stop"]["output_tail"] == ["saving work"]
    assert "pre_stop| saving work" in agent.log()


def test_a_hung_pre_stop_is_killed_at_its_limit_and_the_stop_still_happens(agent, tmp_path):
    stopped = tmp_path / "stopped"
    agent.install("--stop-command", f"echo stopped >> {stopped}",
                  "--pre-stop", "echo pushing; sleep 60", "--pre-stop-seconds", "1")  # fmt: skip
    agent.advance(6 * 3600)
    started = time.monotonic()
    agent.check_until_stop()
    assert time.monotonic() - started < 40  # not the pre_stop's 60 s
    assert stopped.read_text() == "stopped\n"
    pre = agent("status")["pre_stop"]
    assert pre["timed_out"] is True and pre["output_tail"] == ["pushing"]
    assert "pre_stop: ran past its limit and was killed" in agent.log()


def test_the_cap_stops_the_real_agent_and_says_why(agent, tmp_path):
    stopped = tmp_path / "stopped"
    agent.install("--stop-command", f"echo stopped >> {stopped}", "--max-hours", "1", minutes="600")
    boot = agent("status")
    assert boot["max_hours"] == 1.0
    # Make the machine's uptime pass the cap, whatever it is now; the idle limit of ten
    # hours is not reached.
    uptime = boot["uptime_seconds"]
    agent.advance(max(0.0, 3600 - uptime) + 30)
    status_before = agent("status")
    assert status_before["idle_seconds"] < 600 * 60
    result = agent("check")
    assert [kind for kind, _ in result["actions"]] == ["stop"]
    assert stopped.read_text() == "stopped\n"
    assert "the cap is 1h (max_hours)" in agent("status")["last_stop"]["reason"]


@pytest.mark.skipif(not os.path.exists("/usr/bin/setpriv") or os.geteuid() != 0,
                    reason="needs root to run the agent as another user")  # fmt: skip
@pytest.mark.skipif(not os.path.exists("/usr/bin/python3"), reason="no system python3")
def test_as_a_user_without_root_or_sudo_install_says_so_and_the_failed_stop_is_kept():
    import shutil
    import tempfile

    # A real unprivileged user (nobody), as on a shared SSH host: the default power-off
    # cannot work there, and the agent must say so rather than claim auto-stop is on.
    scratch = tempfile.mkdtemp(prefix="gpubox-nobody-")
    try:
        os.chmod(scratch, 0o777)
        agent_dir = os.path.join(scratch, "agent")
        shutil.copytree(SCRIPT.parent, agent_dir, ignore=shutil.ignore_patterns("__pycache__"))
        clock = os.path.join(scratch, "clock")
        with open(clock, "w") as handle:
            handle.write(str(time.time()))
        env = {"PATH": "/usr/bin:/bin", "HOME": scratch, "GPUBOX_AGENT_CLOCK": clock,
               "GPUBOX_AGENT_HOME": os.path.join(scratch, "home")}  # fmt: skip

        def run(*args):
            done = subprocess.run(
                ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                 "/usr/bin/python3", os.path.join(agent_dir, "idle.py"), *args],
                env=env, capture_output=True, text=True, timeout=60, cwd=scratch,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            return json.loads(done.stdout.strip().splitlines()[-1])

        dead = f"http://127.0.0.1:{free_port()}"
        said = run("install", "--idle-minutes", "1", "--mode", "none", "--jupyter-url", dead)
        assert said["can_stop"] is False
        assert "cannot stop this machine" in said["message"]
        for hours in (6, 7):  # the idle decision may warn at one poll and stop at the next
            with open(clock, "w") as handle:
                handle.write(str(time.time() + hours * 3600))
            run("check")
        status = run("status")
        assert status["can_stop"] is False
        assert status["stop_command"] == "sudo -n shutdown -h now"
        assert status["stop_failed"]["ok"] is False and status["stop_failed"]["error"]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def test_a_spot_notice_runs_pre_stop_within_what_the_notice_allows(imds, tmp_path):  # noqa: F811
    import datetime

    from tests.providers.aws.test_spot import FakeImds, run_watch

    spot_watch = __import__("gpubox.remote.agent.spot_watch", fromlist=["x"])
    soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=120)
    stamp = soon.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert 95 <= spot_watch.pre_stop_seconds({"time": stamp}, 300) <= 105
    assert spot_watch.pre_stop_seconds({"time": stamp}, 30) == 30
    assert spot_watch.pre_stop_seconds({"time": "2000-01-01T00:00:00Z"}, 300) == 5

    home = tmp_path / "boxhome"
    config = home / ".gpubox" / "state" / "idle-config.json"
    config.parent.mkdir(parents=True)
    saved = tmp_path / "saved"
    config.write_text(json.dumps({"pre_stop": f"echo pushing work; touch {saved}"}))
    FakeImds.notice = json.dumps({"action": "stop", "time": stamp}).encode()
    noticed = run_watch(imds, home)
    assert noticed.returncode == 0, noticed.stderr
    assert saved.exists()
    log = (home / ".gpubox" / "logs" / "idle.log").read_text()
    assert "pre_stop (spot interruption notice)" in log and "pre_stop| pushing work" in log
