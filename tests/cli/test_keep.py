"""`gpubox keep` through gpubox's own entry point, on a local box (this machine, its HOME
under tmp_path): the keep lands on the box, the agent sees it, `off` ends it."""

from __future__ import annotations

import json
import subprocess

import pytest

from gpubox.providers.base import BoxSpec
from tests.cli.test_money import gpubox


@pytest.fixture
def local_box(isolation, tmp_path, monkeypatch):
    home = tmp_path / "host-home"
    monkeypatch.setenv("HOME", str(home))
    # The one difference from a box: the stop action only writes a line here.
    monkeypatch.setenv("GPUBOX_IDLE_STOP_COMMAND", f"echo stopped >> {tmp_path}/stops")
    monkeypatch.setenv("COLUMNS", "200")
    from gpubox import box, config
    from gpubox.state import State

    settings = config.load()
    state = State(settings.state_path)
    box.up(settings, state, BoxSpec(name="l1", provider="local"), setup=False)
    state.close()
    yield home


@pytest.mark.machine_wide  # the agent reads every process here
def test_keep_holds_a_box_the_agent_sees_it_and_off_ends_it(capsys, local_box, tmp_path):
    try:
        code, _, err = gpubox(capsys, "autostop", "l1", "45m")
        assert code == 0, err
        config = json.loads((local_box / ".gpubox" / "state" / "idle-config.json").read_text())
        assert config["box_name"] == "l1"  # the warning's `gpubox keep l1 2h`

        code, out, err = gpubox(capsys, "keep", "l1", "3h")
        assert code == 0, err
        assert "l1: the box stays up until" in err and "bills all that time" in err
        code, out, err = gpubox(capsys, "autostop", "l1")
        assert code == 0 and "in use (gpubox-keep until" in out
        code, out, err = gpubox(capsys, "keep", "l1")
        assert code == 0 and "kept by: gpubox-keep until" in out
        # On the box, its own gpubox-keep (put on the PATH by the agent's install) sees it.
        on_box = tmp_path / "keep-bin" / "gpubox-keep"
        said = subprocess.run([str(on_box)], capture_output=True, text=True, check=True).stdout
        assert said.startswith("kept by: gpubox-keep until")

        code, out, err = gpubox(capsys, "keep", "l1", "off")
        assert code == 0 and "no keep any more" in err
        code, out, err = gpubox(capsys, "keep", "l1")
        assert code == 0 and "nothing keeps the box up" in out
    finally:
        gpubox(capsys, "autostop", "l1", "off")


@pytest.mark.parametrize("duration", ["0", "banana", "9d"])
def test_keep_refuses_a_bad_duration_before_connecting(capsys, isolation, duration):
    code, _, err = gpubox(capsys, "keep", "nosuchbox", duration)
    assert code == 2 and f"'{duration}' is not a time to keep the box for" in err
    assert "3h" in err


def test_keep_of_an_unknown_box_says_so(capsys, isolation):
    code, _, err = gpubox(capsys, "keep", "nosuchbox", "3h")
    assert code != 0 and "nosuchbox" in err and "Traceback" not in err
