"""Before `down`, the work: at a real terminal, `down` lists the files changed on the box
since setup (newer than the record the bootstrap's notebooks step leaves) and copies
them here on a yes. The box is a real sshd whose sessions get a HOME of the test's own."""

from __future__ import annotations

import os
import time

import pytest

from gpubox.jupyter import token_for
from tests.cli.test_aws_subprocess import run_in_terminal
from tests.remote.farbox import add_box, gpubox

pytestmark = [
    pytest.mark.sshd,
    pytest.mark.skipif(not os.path.exists("/usr/sbin/sshd"), reason="needs openssh-server"),
]


def plant_work(home):
    """A box as the bootstrap leaves it, then a student's edits."""
    old = time.time() - 3600
    for rel in ("d2l/chapter_intro/untouched.ipynb", ".gpubox/state/notebooks"):
        path = home / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("from setup")
        os.utime(path, (old, old))
    (home / "d2l/chapter_intro/edited nb.ipynb").write_text('{"cells": []}')
    (home / "work").mkdir(exist_ok=True)
    (home / "work/model.pt").write_bytes(b"\0" * 2048)
    (home / "d2l/.ipynb_checkpoints").mkdir(exist_ok=True)
    (home / "d2l/.ipynb_checkpoints/x.ipynb").write_text("autosave")


def test_down_at_a_terminal_offers_to_copy_the_work_first(far, settings, tmp_path, monkeypatch):
    add_box(settings, far)
    token_for(settings, "b1")  # set up here (the offer is for boxes gpubox set up)
    plant_work(far.home)
    monkeypatch.chdir(tmp_path)
    code, shown = run_in_terminal(["down", "b1"], [("here first?", "y")])
    assert code == 0, shown
    assert "2 files changed on 'b1' since setup" in shown
    assert "work/model.pt  (2.0 KB)" in shown and "edited nb.ipynb" in shown
    assert "untouched" not in shown and "checkpoints" not in shown
    copied = tmp_path / "b1-work"
    assert sorted(str(p.relative_to(copied)) for p in copied.rglob("*") if p.is_file()) == [
        "d2l/chapter_intro/edited nb.ipynb", "work/model.pt"]
    assert "forgot 'b1'" in shown
    assert (far.home / "work/model.pt").is_file()  # down of an ssh host deletes nothing there


def test_down_without_a_terminal_asks_nothing(far, settings, tmp_path, monkeypatch):
    add_box(settings, far)
    token_for(settings, "b1")
    plant_work(far.home)
    monkeypatch.chdir(tmp_path)
    done = gpubox("down", "b1")
    assert done.returncode == 0, done.stderr
    assert "changed on" not in done.stderr and not (tmp_path / "b1-work").exists()
