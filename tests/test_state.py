from __future__ import annotations

from gpubox.providers.base import Box, BoxState
from gpubox.state import State


def test_boxes_round_trip_and_survive_reopening(tmp_path):
    path = tmp_path / "state.sqlite"
    state = State(path)
    box = Box("b1", "aws", BoxState.RUNNING, type="g4dn.xlarge", region="us-east-1",
              extra=(("az", "us-east-1a"),))
    state.remember(box)
    state.close()
    again = State(path)
    assert again.box("b1") == box
    assert again.box("b1").get("az") == "us-east-1a"
    again.forget("b1")
    assert again.boxes() == []


def test_runs_open_once_and_close(tmp_path):
    state = State(tmp_path / "s.sqlite")
    state.run_started("b1", "g5.xlarge", 1.0, at=100.0)
    state.run_started("b1", "g5.xlarge", 1.0, at=150.0)  # still the same run
    state.run_stopped("b1", at=200.0)
    runs = state.runs("b1")
    assert [(r["started_at"], r["stopped_at"]) for r in runs] == [(100.0, 200.0)]


def test_journal_keeps_the_last_step(tmp_path):
    state = State(tmp_path / "s.sqlite")
    state.journal("b1", "launch", provider="aws")
    state.journal("b1", "setup")
    assert state.last_step("b1") == ("setup", {})
