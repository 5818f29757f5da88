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

    message = set_idle_limit(runner, 30)
    assert "after 30m" in message
    assert (host_home / ".gpubox" / "agent" / "idle.py").is_file()
    status = read_idle_status(runner)
    assert status is not None and status.enabled and status.limit_minutes == 30
    assert status.summary().endswith("of 30m")
    assert status.idle_seconds is not None and status.idle_seconds < 30 * 60
    assert "install: idle auto-stop after 30m" in idle_log(runner)

    assert set_idle_limit(runner, None) == "idle auto-stop is off"
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
