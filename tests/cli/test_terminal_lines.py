"""On a terminal, progress lines are plain: no `[13:42:38]` time and no `lifecycle.py:27`
source file (rich's console.log adds both). The real `gpubox` command on a pseudo-terminal,
against moto's server."""

from __future__ import annotations

import re

from tests.cli import test_aws_subprocess
from tests.cli.test_aws_subprocess import SSH_FROM, live_instances, run_in_terminal

endpoint = test_aws_subprocess.endpoint  # the fixture: a wiped moto world, AWS_ENDPOINT_URL set

TIME = re.compile(r"\[\d\d:\d\d:\d\d\]")
SOURCE = re.compile(r"\b[a-z_]+\.py:\d+")


def test_up_stop_start_down_on_a_terminal_print_plain_progress_lines(endpoint):
    shown = ""
    for args in (["up", "box1", "--type", "g4dn.xlarge", "--no-setup", "--ssh-from", SSH_FROM],
                 ["stop", "box1"], ["start", "box1"], ["down", "box1", "--yes"]):  # fmt: skip
        code, out = run_in_terminal(args, [])
        assert code == 0, out
        shown += out
    assert live_instances(endpoint) == []
    assert "… terminating i-" in shown  # the progress lines are there
    assert TIME.findall(shown) == [] and SOURCE.findall(shown) == [], shown
