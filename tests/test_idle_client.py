"""Client side of idle auto-stop: durations, and the real agent set and read through a Runner."""

from __future__ import annotations

import json
import os

import pytest

from gpubox.errors import InvalidInput
from gpubox.idle import (
    IdleStatus,
    describe_limit,
    idle_log,
    parse_idle_limit,
    read_idle_status,
    set_idle_limit,
)
from gpubox.remote.runner import LocalRunner


@pytest.mark.parametrize(
    ("text", "minutes"),
    [("30m", 30), ("2h", 120), ("1h30m", 90), ("45", 45), ("1.5h", 90), ("1d", 1440),
     ("90 min", 90), ("OFF", None), ("never", None)],
)  # fmt: skip
def test_durations(text, minutes):
    assert parse_idle_limit(text) == minutes


@pytest.mark.parametrize("text", ["0", "0m", "0h", "banana", "30x", "m", "-5m", "2h banana", "8d"])
def test_bad_durations_are_refused_with_a_hint(text):
    with pytest.raises(InvalidInput) as caught:
        parse_idle_limit(text)
    assert caught.value.hint


def test_zero_says_why_and_points_to_off():
    with pytest.raises(InvalidInput) as caught:
        parse_idle_limit("0")
    assert "the moment it starts" in caught.value.message and "off" in caught.value.hint


def test_describe_limit():
    assert [describe_limit(m) for m in (None, 30, 60, 90)] == ["off", "30m", "1h", "1h30m"]


def test_summary_says_what_keeps_a_box_up():
    busy = IdleStatus(enabled=True, limit_minutes=60, idle_seconds=0, busy=("GPU 0 at 97%",))
    assert busy.summary() == "in use (GPU 0 at 97%); stops after 1h idle"
    idle = IdleStatus(enabled=True, limit_minutes=60, idle_seconds=12 * 60 + 5)
    assert idle.summary() == "idle 12m of 1h"


@pytest.fixture
def host_home(tmp_path, monkeypatch):
    """This machine as the host, with its home (where ~/.gpubox goes) under tmp_path."""
    home = tmp_path / "host-home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    # The one difference from a box: the stop action only writes a line here.
    monkeypatch.setenv("GPUBOX_IDLE_STOP_COMMAND", f"echo stopped >> {tmp_path}/stops")
    yield home
    loop = home / ".gpubox" / "state" / "idle-loop.json"
    if loop.exists():
        try:
            os.kill(json.loads(loop.read_text())["pid"], 15)
        except ProcessLookupError:
            pass


def test_set_read_and_turn_off_the_limit_on_a_host(host_home):
    runner = LocalRunner()
    assert read_idle_status(runner) is None  # no agent there yet

    message = set_idle_limit(runner, 30)["message"]
    assert "after 30m" in message
    assert (host_home / ".gpubox" / "agent" / "idle.py").is_file()
    status = read_idle_status(runner)
    assert status is not None and status.enabled and status.limit_minutes == 30
    assert status.summary().endswith("of 30m")
    assert status.idle_seconds is not None and status.idle_seconds < 30 * 60
    assert "install: idle auto-stop after 30m" in idle_log(runner)

    assert set_idle_limit(runner, None)["message"] == "idle auto-stop is off"
    status = read_idle_status(runner)
    assert status is not None and not status.enabled
    assert status.summary() == "auto-stop off"
    assert not (host_home / ".gpubox" / "state" / "idle-loop.json").exists()


# --- one check for every source of the idle limit and the uptime cap ----------------
@pytest.mark.parametrize("text", ["0", "-5", "-5m", "0h"])
def test_zero_and_negative_limits_are_refused_from_every_source(tmp_path, text):
    from gpubox import config

    with pytest.raises(InvalidInput) as flag:
        parse_idle_limit(text)
    assert "off" in flag.value.hint
    with pytest.raises(InvalidInput) as env:
        config.load({"GPUBOX_HOME": str(tmp_path), "GPUBOX_IDLE_STOP_MINUTES": text})
    assert "GPUBOX_IDLE_STOP_MINUTES" in env.value.message and "off" in env.value.hint
    (tmp_path / "config").mkdir(exist_ok=True)
    (tmp_path / "config" / "config.toml").write_text(f'idle_stop_minutes = "{text}"\n')
    with pytest.raises(InvalidInput) as file:
        config.load({"GPUBOX_HOME": str(tmp_path)})
    assert "config.toml" in file.value.message and "off" in file.value.hint


def test_a_toml_number_zero_is_refused_too(tmp_path):
    from gpubox import config

    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.toml").write_text("idle_stop_minutes = 0\nmax_hours = 0\n")
    with pytest.raises(InvalidInput) as caught:
        config.load({"GPUBOX_HOME": str(tmp_path)})
    assert "off" in caught.value.hint


def test_limits_from_file_and_environment_read_like_the_flag(tmp_path):
    from gpubox import config

    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.toml").write_text('idle_stop_minutes = "1h30m"\nmax_hours = 12\n')
    settings = config.load({"GPUBOX_HOME": str(tmp_path)})
    assert (settings.idle_stop_minutes, settings.max_hours) == (90, 12.0)
    env = {"GPUBOX_HOME": str(tmp_path), "GPUBOX_IDLE_STOP_MINUTES": "1", "GPUBOX_MAX_HOURS": "90m"}
    settings = config.load(env)
    assert (settings.idle_stop_minutes, settings.max_hours) == (1, 1.5)  # 1 minute is allowed
    env.update(GPUBOX_IDLE_STOP_MINUTES="off", GPUBOX_MAX_HOURS="off")
    settings = config.load(env)
    assert (settings.idle_stop_minutes, settings.max_hours) == (0, None)  # 0 means off inside


def test_config_set_refuses_zero_and_keeps_the_file_as_it_was(tmp_path):
    from gpubox import config

    settings = config.load({"GPUBOX_HOME": str(tmp_path)})
    config.write_setting(settings, "idle_stop_minutes", "45m")
    for bad in ("0", "-5"):
        with pytest.raises(InvalidInput) as caught:
            config.write_setting(settings, "idle_stop_minutes", bad)
        assert "off" in caught.value.hint
    with pytest.raises(InvalidInput):
        config.write_setting(settings, "max_hours", "0")
    assert config.load({"GPUBOX_HOME": str(tmp_path)}).idle_stop_minutes == 45


@pytest.mark.parametrize(("text", "hours"), [("12", 12.0), ("1.5", 1.5), ("90m", 1.5), ("1d", 24.0), ("off", None)])
def test_max_hours(text, hours):
    from gpubox.idle import parse_max_hours

    assert parse_max_hours(text) == hours


@pytest.mark.parametrize("text", ["0", "-1", "banana", "0.001"])
def test_bad_max_hours_are_refused_with_a_hint(text):
    from gpubox.idle import parse_max_hours

    with pytest.raises(InvalidInput) as caught:
        parse_max_hours(text)
    assert "off" in caught.value.hint


# --- end to end: the real command, this machine as the box ---------------------------
@pytest.mark.slow
def test_a_local_box_left_alone_stops_and_a_failed_stop_is_loud_until_one_works(tmp_path):
    """`gpubox up --provider local --no-setup`, then `gpubox autostop g1 1m --max-hours N`.
    The stop command is the setting idle_stop_command: it fails as `sudo -n shutdown` does
    without sudo until the test allows it, then writes a file. The agent's clock is a file
    (GPUBOX_AGENT_CLOCK) and its poll is half a second, so three hours pass at once."""
    import subprocess
    import sys
    import time

    allowed, stopped, clock = tmp_path / "allowed", tmp_path / "stopped", tmp_path / "clock"
    clock.write_text(str(time.time()))
    command = (f"if [ -e {allowed} ]; then echo stopped >> {stopped}; "
               f"else echo 'sudo: a password is required' >&2; exit 1; fi")  # fmt: skip
    home = tmp_path / "host-home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "GPUBOX_IDLE_STOP_COMMAND": command,
           "GPUBOX_AGENT_CLOCK": str(clock), "GPUBOX_IDLE_POLL_SECONDS": "0.5",
           "GPUBOX_JUPYTER_URL": "http://127.0.0.1:9"}  # fmt: skip

    def gpubox(*args):
        done = subprocess.run([sys.executable, "-m", "gpubox", *args], env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    def guard():
        return json.loads(gpubox("status", "g1", "--json").stdout)[0]["idle"]

    def wait_for(predicate, timeout=90.0):
        """Poll for the effect; the agent's clock moves ten minutes between looks (the
        idle decision may warn at one poll and stop at a later one)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            clock.write_text(str(float(clock.read_text()) + 600))
            value = predicate()
            if value:
                return value
            time.sleep(0.5)
        raise AssertionError(f"not true within {timeout}s")

    from gpubox.idle import describe_hours

    # The uptime cap is this machine's (its boot): above any uptime the test's clock reaches.
    with open("/proc/uptime") as handle:
        cap = int(float(handle.read().split()[0]) // 3600) + 100
    gpubox("up", "g1", "--provider", "local", "--no-setup")
    said = gpubox("autostop", "g1", "1m", "--max-hours", str(cap))
    assert "idle auto-stop after 1m" in said.stderr
    assert f"after {describe_hours(cap)} of uptime" in said.stdout
    try:
        seen = guard()
        assert seen["enabled"] and seen["limit_minutes"] == 1 and seen["max_hours"] == cap
        assert seen["running"] is True and seen["stop_failed_at"] is None
        assert seen["idle_seconds"] < 60

        clock.write_text(str(time.time() + 3 * 3600))  # three quiet hours
        failed = wait_for(lambda: (g := guard())["stop_failed_at"] and g)
        assert "a password is required" in failed["stop_failed_error"]
        shown = gpubox("status", "g1")
        assert "idle stop FAILED at" in shown.stderr and "a password is required" in shown.stderr
        listed = gpubox("status")  # all boxes, no SSH: what `status g1` last saw
        assert "g1: idle stop FAILED at" in listed.stderr
        assert not stopped.exists()

        allowed.write_text("")  # the agent asks again each poll: now the stop works
        wait_for(stopped.exists)
        seen = wait_for(lambda: (g := guard())["stop_failed_at"] is None and g)
        assert seen["last_stop_ok"] is True and "idle for" in seen["last_stop_reason"]
        assert "FAILED" not in gpubox("status").stderr
    finally:
        gpubox("autostop", "g1", "off", "--max-hours", "off")
        loop = home / ".gpubox" / "state" / "idle-loop.json"
        if loop.exists():
            try:
                os.kill(json.loads(loop.read_text())["pid"], 15)
            except ProcessLookupError:
                pass


def test_up_says_loudly_when_the_guard_cannot_stop_the_machine(capsys):
    """The agent's own words (its install on a host without root or sudo, as the test in
    tests/agent/test_stop.py runs it for real) reach `up`'s output as an error."""
    from types import SimpleNamespace

    from gpubox.cli.lifecycle import _guard_notes
    from gpubox.config import load
    from gpubox.providers.base import Box, BoxSpec, BoxState
    from gpubox.setup import StepEvent

    said = ("idle auto-stop after 1h, checked by a crontab entry; BUT it cannot stop this "
            "machine: no root and no passwordless sudo for `shutdown`")  # fmt: skip
    # A stand-in for up's result: only the setup's step events are read.
    result = SimpleNamespace(setup=SimpleNamespace(events=(StepEvent("agent", "done", 1.0, said),)))
    box = Box(name="s1", provider="ssh", state=BoxState.RUNNING)
    _guard_notes(load(), BoxSpec(name="s1", provider="ssh"), box, True, result)
    err = capsys.readouterr().err
    assert "'s1' will NOT stop by itself" in err and "idle_stop_command" in err
