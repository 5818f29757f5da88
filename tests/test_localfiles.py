"""localfiles (atomic private writes, locks, 0700 folders), the state cache that never
blocks, and the interruption record, in-process with real files and real processes."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import stat
import threading
from pathlib import Path

import pytest

from gpubox import inflight
from gpubox.errors import GpuboxError
from gpubox.localfiles import locked, private_dir, read_text, write_private


def test_write_private_is_0600_under_umask_000_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "a" / "b" / "file"
    old = os.umask(0)
    try:
        write_private(target, "one")
        write_private(target, "two")
    finally:
        os.umask(old)
    assert target.read_text() == "two"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    for folder in (tmp_path / "a", tmp_path / "a" / "b"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert sorted(p.name for p in target.parent.iterdir()) == ["file"]


def test_a_file_that_cannot_be_written_is_one_clear_error_naming_it(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with pytest.raises(GpuboxError, match=f"cannot make the folder {blocker / 'sub'}") as caught:
        write_private(blocker / "sub" / "file", "x")
    assert "GPUBOX_HOME" in (caught.value.hint or "")
    with pytest.raises(GpuboxError, match="cannot read"):
        read_text(blocker / "x")  # a path through a file: not "missing", unreadable
    assert read_text(tmp_path / "missing") is None


def test_locked_read_modify_write_loses_no_update(tmp_path):
    counter = tmp_path / "counter"
    write_private(counter, "0")

    def bump() -> None:
        for _ in range(50):
            with locked(counter):
                write_private(counter, str(int(counter.read_text()) + 1))

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counter.read_text() == "200"


def test_private_dir_keeps_existing_folders_as_they_are(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    private_dir(shared / "mine")
    assert stat.S_IMODE(shared.stat().st_mode) == 0o755
    assert stat.S_IMODE((shared / "mine").stat().st_mode) == 0o700


# the state cache -----------------------------------------------------------------


def _open_state(path: str) -> None:
    from gpubox.state import State

    state = State(Path(path))
    state.put("k", "v")
    state.close()


def test_many_processes_opening_a_new_state_database_at_once_all_succeed(tmp_path):
    path = tmp_path / "home" / "state.sqlite"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_open_state, args=(str(path),)) for _ in range(8)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
    assert [p.exitcode for p in procs] == [0] * 8
    from gpubox.state import MIGRATIONS

    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


def test_a_corrupt_state_database_is_moved_aside_and_started_afresh(tmp_path, capsys):
    from gpubox.state import State

    path = tmp_path / "state.sqlite"
    path.write_bytes(b"\x00garbage" * 500)
    state = State(path)
    state.put("k", "v")
    assert state.get("k") == "v" and not state.in_memory
    state.close()
    (aside,) = tmp_path.glob("state.sqlite.corrupt-*")
    assert aside.read_bytes().startswith(b"\x00garbage")
    assert "was damaged" in capsys.readouterr().err


def test_the_tunnel_url_is_kept_without_its_token(tmp_path):
    from gpubox.state import State

    state = State(tmp_path / "state.sqlite")
    state.save_tunnel("b1", 8899, 123, "http://127.0.0.1:8899/lab?token=secret")
    assert state.tunnel("b1")["url"] == "http://127.0.0.1:8899/lab"
    state.close()
    assert b"secret" not in (tmp_path / "state.sqlite").read_bytes()


def test_version_1_tunnel_urls_lose_their_token_on_upgrade(tmp_path):
    from gpubox.state import MIGRATIONS, State

    path = tmp_path / "state.sqlite"
    db = sqlite3.connect(path)
    db.executescript(MIGRATIONS[0] + "; PRAGMA user_version = 1;")
    db.execute("INSERT INTO tunnels VALUES ('b1', 1, 2, 'http://127.0.0.1:1/lab?token=s', 0)")
    db.commit()
    db.close()
    assert State(path).tunnel("b1")["url"] == "http://127.0.0.1:1/lab"


# the interruption record ----------------------------------------------------------


def test_the_interruption_record_says_what_exists_its_cost_and_how_to_finish():
    inflight.command("gpubox up box1 --type g4dn.xlarge")
    inflight.begin("bringing up 'box1'", undo="gpubox down box1 --yes")
    inflight.made("key pair", "gpubox-box1", "us-east-1")
    inflight.made("security group", "sg-1", "us-east-1")
    from gpubox.providers.aws.prices import snapshot_per_hour

    inflight.made("instance", "i-1", "us-east-1", snapshot_per_hour("g4dn.xlarge", "us-east-1"))
    inflight.gone("security group", "sg-1")
    inflight.step("waiting for SSH")
    lines = inflight.lines()
    assert lines[0] == "what exists now:"
    assert "  instance i-1 (us-east-1): $0.526/h" in lines
    assert not any("sg-1" in line for line in lines)
    assert "it costs $0.53/h while it exists" in lines
    assert lines[-2:] == ["finish it:  gpubox up box1 --type g4dn.xlarge",
                          "undo it:    gpubox down box1 --yes"]  # fmt: skip
    told = inflight.headline(inflight.Interrupted(15))
    assert told == "interrupted by SIGTERM while waiting for SSH"
    assert inflight.Interrupted(2).exit_code == 130


def test_the_crash_logger_never_crashes(tmp_path, monkeypatch):
    from gpubox.cli.main import _log_bug

    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("GPUBOX_HOME", str(blocker / "home"))  # nothing can be made there
    monkeypatch.setattr("tempfile.gettempdir", lambda: str(blocker / "tmp"))
    assert _log_bug(RuntimeError("x")) == "nowhere (no writable folder for a log)"


def test_temporary_files_a_killed_gpubox_left_are_swept_after_an_hour(tmp_path):
    target = tmp_path / "ssh_config"
    stale = tmp_path / ".ssh_config.abc123.tmp"
    fresh = tmp_path / ".ssh_config.def456.tmp"  # maybe another gpubox writing right now
    stale.write_text("half")
    fresh.write_text("half")
    os.utime(stale, (0, 0))
    write_private(target, "whole")
    assert not stale.exists() and fresh.exists()
