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


def test_a_second_state_in_one_process_keeps_the_first_ones_lock(tmp_path):
    """A process has the cache open through one State and opens another on the same file
    (gpubox's AWS provider keeps a State of its own beside the command's). In WAL mode an
    open connection holds a shared lock on the database file, so no other process can
    take the file out of WAL under it. Closing any descriptor of a file drops every POSIX
    lock the process holds on it: making the file 0600 must not open it once it is there."""
    import subprocess
    import sys

    path = tmp_path / "state.sqlite"
    first = State(path)
    first.journal("box1", "find")
    second = State(path)
    other = subprocess.run(
        [sys.executable, "-c", "import sqlite3, sys; db = sqlite3.connect(sys.argv[1], "
         "timeout=0.5); print(db.execute('PRAGMA journal_mode=DELETE').fetchone()[0])",
         str(path)], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert other.stdout.strip() != "delete", "another process took the cache out of WAL"
    second.close()
    first.close()
