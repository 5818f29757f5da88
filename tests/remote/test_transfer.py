"""`gpubox cp` and `gpubox sync` as a user runs them: the real command, a real sshd whose
sessions get a HOME of the test's own (the "far side"), the real rsync and ssh."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gpubox.remote.ssh import close_master
from tests.remote.farbox import add_box, gpubox, path_without

pytestmark = [
    pytest.mark.sshd,
    pytest.mark.skipif(not os.path.exists("/usr/sbin/sshd"), reason="needs openssh-server"),
    pytest.mark.skipif(shutil.which("rsync") is None, reason="needs rsync (apt-get install rsync)"),
]


@pytest.fixture
def box(far, settings):
    provider, made = add_box(settings, far)
    yield far.home
    close_master(provider.endpoint(made), settings, "b1")


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def make_project(root: Path) -> Path:
    (root / "sub dir").mkdir(parents=True)
    (root / "a.txt").write_text("alpha\n")
    (root / "sub dir" / "b c.txt").write_text("beta\n")
    return root


def test_cp_up_and_back_recursive_with_spaces(box, tmp_path):
    src = make_project(tmp_path / "my data")
    up = gpubox("cp", str(src), "b1:~/far dir/my data")
    assert up.returncode == 0, up.stderr
    assert tree(box / "far dir" / "my data") == tree(src)
    assert "2 changed files sent" in up.stderr

    back = gpubox("cp", "b1:~/far dir/my data", str(tmp_path / "back") + "/")
    assert back.returncode == 0, back.stderr
    assert tree(tmp_path / "back" / "my data") == tree(src)
    one = gpubox("cp", "b1:~/far dir/my data/a.txt", str(tmp_path / "one.txt"))
    assert one.returncode == 0 and (tmp_path / "one.txt").read_text() == "alpha\n"


def test_a_second_copy_sends_only_the_changed_file(box, tmp_path):
    src = make_project(tmp_path / "proj")
    assert gpubox("cp", str(src), "b1:proj").returncode == 0
    far_a, far_b = box / "proj" / "a.txt", box / "proj" / "sub dir" / "b c.txt"
    inodes = far_a.stat().st_ino, far_b.stat().st_ino
    (src / "a.txt").write_text("alpha, changed\n")
    again = gpubox("cp", str(src), "b1:proj")
    assert again.returncode == 0, again.stderr
    assert "1 changed file sent" in again.stderr
    assert far_a.read_text() == "alpha, changed\n"
    # rsync writes a resent file anew (new inode); the unchanged one is not touched
    assert far_a.stat().st_ino != inodes[0] and far_b.stat().st_ino == inodes[1]


def test_an_interrupted_copy_keeps_its_part_and_resumes(box, tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(8 * 1024 * 1024))
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpubox", "cp", str(big), "b1:big.bin", "--limit", "1024"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    started = False
    while time.monotonic() < deadline and not started:
        started = any(p.name.startswith(".big.bin.") and p.stat().st_size > 256 * 1024
                      for p in box.iterdir())
        time.sleep(0.1)
    assert started, "rsync never began writing on the far side"
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode != 0 and "resume" in err
    part = box / "big.bin"
    for _ in range(50):  # the far rsync saves its part as it ends
        if part.exists():
            break
        time.sleep(0.1)
    assert 0 < part.stat().st_size < big.stat().st_size
    again = gpubox("cp", str(big), "b1:big.bin")
    assert again.returncode == 0, again.stderr
    assert part.read_bytes() == big.read_bytes()


def test_tar_when_the_box_has_no_rsync(bare, settings, tmp_path):
    provider, made = add_box(settings, bare, "b2")
    try:
        src = make_project(tmp_path / "proj")
        up = gpubox("cp", str(src), "b2:~/proj")
        assert up.returncode == 0, up.stderr
        assert "rsync is not installed on 'b2'" in up.stderr
        assert tree(bare.home / "proj") == tree(src)
        one = gpubox("cp", str(src / "a.txt"), "b2:~/proj/sub dir/")
        assert one.returncode == 0 and (bare.home / "proj" / "sub dir" / "a.txt").is_file()
        back = gpubox("cp", "b2:~/proj", str(tmp_path / "back"))
        assert back.returncode == 0, back.stderr
        assert tree(tmp_path / "back") == tree(bare.home / "proj")
        file_back = gpubox("cp", "b2:proj/a.txt", str(tmp_path))
        assert file_back.returncode == 0 and (tmp_path / "a.txt").read_text() == "alpha\n"
        # a sync without rsync sends the files that are not ignored
        (src / ".gitignore").write_text("*.log\n")
        (src / "x.log").write_text("noise")
        synced = gpubox("sync", "b2", str(src), "~/synced")
        assert synced.returncode == 0, synced.stderr
        assert sorted(tree(bare.home / "synced")) == [".gitignore", "a.txt", "sub dir/b c.txt"]
    finally:
        close_master(provider.endpoint(made), settings, "b2")


def test_no_rsync_here_is_tar_too(box, tmp_path):
    src = make_project(tmp_path / "proj")
    env = {"PATH": path_without(tmp_path, "rsync") + ":" + os.path.dirname(sys.executable)}
    up = gpubox("cp", str(src), "b1:~/here-no-rsync", env=env)
    assert up.returncode == 0, up.stderr
    assert "rsync is not installed on this machine" in up.stderr
    assert tree(box / "here-no-rsync") == tree(src)


def make_ignoring_project(root: Path) -> Path:
    make_project(root)
    (root / ".gitignore").write_text("*.log\nbuild/\n")
    (root / ".gpuboxignore").write_text("secret.txt\n")
    (root / "build").mkdir()
    (root / "build" / "out.o").write_text("obj")
    (root / "x.log").write_text("noise")
    (root / "sub dir" / "y.log").write_text("noise")
    (root / "secret.txt").write_text("s3cret")
    return root


KEPT = [".gitignore", ".gpuboxignore", "a.txt", "sub dir/b c.txt"]


def test_sync_honours_gitignore_and_gpuboxignore(box, tmp_path):
    src = make_ignoring_project(tmp_path / "proj")
    done = gpubox("sync", "b1", str(src))
    assert done.returncode == 0, done.stderr
    assert sorted(tree(box / "proj")) == KEPT  # default: ~/<the folder's name>


@pytest.mark.parametrize("git", [True, False])
def test_sync_by_tar_honours_the_ignore_files(box, tmp_path, git):
    src = make_ignoring_project(tmp_path / "proj")
    if git:
        subprocess.run(["git", "init", "-q", str(src)], check=True)
    done = gpubox("sync", "b1", str(src), "~/tarred", "--tar")
    assert done.returncode == 0, done.stderr
    assert sorted(tree(box / "tarred")) == KEPT


def test_sync_watch_sends_again_after_a_change(box, tmp_path):
    src = make_project(tmp_path / "watched")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpubox", "sync", "b1", str(src), "--watch"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True, text=True,
    )  # fmt: skip
    far_a = box / "watched" / "a.txt"
    try:
        assert _wait(lambda: far_a.is_file() and far_a.read_text() == "alpha\n")
        (src / "a.txt").write_text("alpha, watched\n")
        assert _wait(lambda: far_a.read_text() == "alpha, watched\n")
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "stopped watching" in err


def _wait(check, seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("./nowhere", "b1:x"), "nowhere does not exist here"),
        (("b1:~/nowhere", "."), "does not exist on the box"),
        (("a", "b"), "both sides are on this machine"),
        (("b1:a", "b1:b"), "both sides are on a box"),
        (("./x", "b9:x"), "no box called 'b9'"),
    ],
)
def test_bad_inputs_are_one_error_line(box, tmp_path, args, words):
    done = gpubox("cp", *args)
    assert done.returncode != 0
    assert "error:" in done.stderr and words in done.stderr
    assert "Traceback" not in done.stderr
