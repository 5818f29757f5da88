"""A price for a box gpubox cannot price (this machine, an ssh host), through the real
command: `up --price`, `gpubox price`, what `status` shows, and bad prices refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def gpubox(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gpubox", *args], capture_output=True, text=True, timeout=120,
        stdin=subprocess.DEVNULL, env=dict(os.environ),
    )


def listed(name: str) -> dict | None:
    done = gpubox("status", "--json")
    assert done.returncode == 0, done.stderr
    return next((b for b in json.loads(done.stdout) if b["name"] == name), None)


def status_line(name: str) -> str:
    done = gpubox("status")
    assert done.returncode == 0, done.stderr
    (line,) = [ln for ln in done.stdout.splitlines() if ln.startswith(name + " ")]
    return line


def test_up_price_and_the_price_command_show_in_status_and_go_with_down(isolation):
    made = gpubox("up", "here", "--provider", "local", "--no-setup", "--price", "0.35")
    assert made.returncode == 0, made.stderr
    assert listed("here")["price_per_hour"] == 0.35
    assert status_line("here").split()[-1] == "$0.35/h"

    changed = gpubox("price", "here", "$0.05/h")  # as a person may type it
    assert changed.returncode == 0, changed.stderr
    assert "'here' costs $0.05/h" in changed.stdout + changed.stderr
    assert listed("here")["price_per_hour"] == 0.05
    shown = gpubox("price", "here")
    assert "'here' costs $0.05/h" in shown.stdout

    assert gpubox("price", "here", "0").returncode == 0
    assert listed("here")["price_per_hour"] == 0.0
    assert status_line("here").split()[-1] == "free"
    assert "is free" in gpubox("price", "here").stdout

    # `up` again with another price changes it, as it would on a new box.
    again = gpubox("up", "here", "--no-setup", "--price", "0.1")
    assert again.returncode == 0, again.stderr
    assert listed("here")["price_per_hour"] == 0.1

    assert gpubox("down", "here", "--yes").returncode == 0
    assert gpubox("up", "here", "--provider", "local", "--no-setup").returncode == 0
    assert listed("here")["price_per_hour"] is None  # forgotten with the box
    assert "has no price" in gpubox("price", "here").stdout


def test_a_bad_price_is_one_clear_error_and_changes_nothing(isolation):
    assert gpubox("up", "here", "--provider", "local", "--no-setup", "--price", "0.2").returncode == 0
    tries = [("price", "here", bad) for bad in ("-1", "abc", "nan", "inf", "", "$")]
    tries += [("up", "other", "--provider", "local", "--no-setup", "--price", bad)
              for bad in ("-0.5", "cheap")]
    for args in tries:
        done = gpubox(*args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        first = done.stderr.splitlines()[0]
        assert first.startswith("error: ") and f"'{args[-1]}' is not a price" in first, done.stderr
        assert "dollars per hour" in first and "Traceback" not in done.stderr
    assert listed("here")["price_per_hour"] == 0.2
    assert listed("other") is None  # nothing half-made


def test_an_aws_box_is_priced_by_aws_not_by_the_user(isolation):
    done = gpubox("up", "gpu", "--type", "g5.xlarge", "--price", "0.3")
    assert done.returncode == 2
    assert done.stderr.startswith("error: --price is for ssh and local boxes"), done.stderr
    missing = gpubox("price", "nobody", "0.3")
    assert missing.returncode != 0 and "no box called 'nobody'" in missing.stderr


@pytest.mark.sshd
def test_an_ssh_host_takes_a_price_at_up_and_later(sshd, isolation):
    target = f"{sshd.user}@127.0.0.1:{sshd.port}"
    made = gpubox("up", "lab", "--host", target, "--key", str(sshd.key_path), "--no-setup",
                  "--price", "0.35")
    assert made.returncode == 0, made.stderr
    assert listed("lab")["price_per_hour"] == 0.35
    assert status_line("lab").split()[-1] == "$0.35/h"
    assert gpubox("price", "lab", "0.5").returncode == 0
    assert listed("lab")["price_per_hour"] == 0.5
    assert gpubox("down", "lab", "--yes").returncode == 0
