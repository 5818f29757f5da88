"""A pytest plugin: every AWS call gpubox makes in the suite must be in its permission
table (gpubox.providers.aws.permissions), so the IAM policy made from that table never
misses one.

gpubox's own boto3 sessions append "service:Operation" to the file named by
GPUBOX_RECORD_CALLS (providers/aws/session.py), in this process and in every `gpubox`
subprocess a test starts, which inherit the variable; calls a test makes itself with
boto3 (seeding moto, reading what the command made) are not gpubox's and are not
recorded. The controller makes the file and, at the end of the session, fails the run
when a recorded call is missing from the table. Under pytest-xdist the workers inherit
the variable and append to the same file; only the controller checks. The other
direction (an entry no code makes) cannot be told from part of a suite: it is a static
check over the source (tests/providers/aws/test_permissions.py).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

ENV = "GPUBOX_RECORD_CALLS"


def recorded(path: str | Path) -> set[str]:
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return set()
    return {line.strip() for line in text.splitlines() if line.strip()}


def missing_from_table(calls: set[str]) -> list[str]:
    """The recorded calls the table lacks, or whose IAM action the policy made from the
    table (`gpubox doctor --policy`) does not allow."""
    from gpubox.providers.aws import permissions

    allowed = permissions.policy_actions(permissions.policy())
    table = permissions.by_call()
    return sorted(c for c in calls if c not in table or table[c].iam_action not in allowed)


def pytest_configure(config):
    global _path
    if hasattr(config, "workerinput") or os.environ.get(ENV):
        _path = os.environ.get(ENV)  # an xdist worker (or a run inside a run): inherited
        return
    fd, path = tempfile.mkstemp(prefix="gpubox-aws-calls-", suffix=".txt")
    os.close(fd)
    os.environ[ENV] = _path = path
    config._gpubox_aws_calls = path


@pytest.fixture(autouse=True)
def record_aws_calls(isolation, monkeypatch):
    """The isolation fixture clears GPUBOX_* variables: put this one back for the test."""
    path = os.environ.get(ENV) or _path
    if path:
        monkeypatch.setenv(ENV, path)


_path: str | None = None


def pytest_sessionfinish(session, exitstatus):
    path = getattr(session.config, "_gpubox_aws_calls", None)
    if path is None:
        return
    calls = recorded(path)
    missing = missing_from_table(calls)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter:
        reporter.write("\n")
    if missing:
        if reporter:
            reporter.write_line(
                "gpubox made AWS calls that are not in providers/aws/permissions.py "
                f"(so not in `gpubox doctor --policy`): {', '.join(missing)}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    elif reporter and calls:
        reporter.write_line(f"gpubox's AWS calls in this run: {len(calls)}, each in its "
                            "permission table and allowed by its IAM policy")


def pytest_unconfigure(config):
    path = getattr(config, "_gpubox_aws_calls", None)
    if path:
        Path(path).unlink(missing_ok=True)
        os.environ.pop(ENV, None)
