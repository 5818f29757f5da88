"""When AWS cannot list its boxes (a typo in AWS_PROFILE, keys AWS refuses), `status`
still shows the boxes on this machine and the ssh hosts, and one warning line says that
the AWS boxes could not be listed and why; the exit code stays 0 (as when offline), so
the warning is the answer. The real `gpubox` command against moto's server, whose
authentication is turned on (moto's /moto-api/reset-auth) to refuse the keys."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request

import pytest

from tests.cli import test_aws_subprocess
from tests.cli.test_aws_subprocess import SSH_FROM

endpoint = test_aws_subprocess.endpoint  # the fixture: a wiped moto world, AWS_ENDPOINT_URL set


def gpubox(*args: str, **env: str | None) -> subprocess.CompletedProcess:
    full = {**os.environ, **{k: v for k, v in env.items() if v is not None}}
    for name in (k for k, v in env.items() if v is None):
        full.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "gpubox", *args],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, env=full, timeout=120,
    )  # fmt: skip


@pytest.fixture
def check_keys(endpoint):
    """Calling it makes moto's server refuse every request's keys (none is an IAM user's)."""
    def reset_auth(count: str) -> None:
        request = urllib.request.Request(
            f"{endpoint}/moto-api/reset-auth", data=count.encode(), method="POST",
            headers={"Content-Type": "text/plain"},  # a form body would reach moto empty
        )
        urllib.request.urlopen(request).read()

    try:
        yield lambda: reset_auth("0")
    finally:
        reset_auth("inf")


def _local_box() -> None:
    made = gpubox("up", "here", "--provider", "local", "--no-setup")
    assert made.returncode == 0, made.stderr


@pytest.mark.parametrize("refresh", [(), ("--refresh",)], ids=["status", "status-refresh"])
def test_a_misspelt_aws_profile_is_named_beside_the_local_box(isolation, refresh):
    _local_box()
    typo = {"AWS_PROFILE": "nope", "AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None,
            "AWS_SESSION_TOKEN": None, "AWS_SECURITY_TOKEN": None}
    done = gpubox("status", *refresh, **typo)
    assert done.returncode == 0, done.stderr
    assert "here" in done.stdout and "local" in done.stdout
    warning = [line for line in done.stderr.splitlines() if "could not be listed" in line]
    assert len(warning) == 1, done.stderr
    assert "AWS boxes could not be listed" in warning[0]
    assert "AWS profile 'nope' is not configured (named by AWS_PROFILE)" in warning[0]
    assert "no boxes yet" not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr


def test_a_misspelt_profile_with_nothing_else_is_not_no_boxes_yet(isolation):
    done = gpubox("status", AWS_PROFILE="nope", AWS_ACCESS_KEY_ID=None,
                  AWS_SECRET_ACCESS_KEY=None, AWS_SESSION_TOKEN=None)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "AWS profile 'nope' is not configured" in done.stderr
    assert "no boxes yet" not in done.stderr
    assert "no boxes on this machine or your ssh hosts" in done.stderr


def test_refused_keys_name_where_they_come_from_and_keep_the_last_seen_box(check_keys):
    # Made while moto still takes any keys: the AWS box is in the local cache.
    made = gpubox("up", "box1", "--type", "g4dn.xlarge", "--no-setup", "--ssh-from", SSH_FROM)
    assert made.returncode == 0, made.stderr
    _local_box()
    check_keys()

    done = gpubox("status", "--refresh", AWS_ACCESS_KEY_ID="AKIAWRONGWRONGWRONG1")
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0] for line in done.stdout.splitlines()[1:] if line.strip()}
    assert rows == {"box1", "here"}, done.stdout
    (warning,) = [line for line in done.stderr.splitlines() if "could not be listed" in line]
    assert "AWS_ACCESS_KEY_ID" in warning  # which credentials AWS refused
    assert "the 1 AWS box below as last seen" in warning

    listed = gpubox("status", "--refresh", "--json", AWS_ACCESS_KEY_ID="AKIAWRONGWRONGWRONG1")
    assert listed.returncode == 0
    assert {b["name"] for b in json.loads(listed.stdout)} == {"box1", "here"}
    assert "AWS boxes could not be listed" in listed.stderr
