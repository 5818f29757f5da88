"""`gpubox ssh NAME -A` and the forward_agent setting: a real ssh-agent here, a real
sshd there; the far side lists the agent's key only when it was forwarded."""

from __future__ import annotations

import os
import re
import signal
import subprocess

import pytest

from tests.remote.farbox import add_box, gpubox
from tests.sshd import keygen

pytestmark = [
    pytest.mark.sshd,
    pytest.mark.skipif(not os.path.exists("/usr/sbin/sshd"), reason="needs openssh-server"),
]


@pytest.fixture
def agent(tmp_path):
    """An ssh-agent of the test's own holding one key; its environment."""
    started = subprocess.run(["ssh-agent", "-s", "-a", str(tmp_path / "agent.sock")],
                             capture_output=True, text=True, check=True)
    env = dict(re.findall(r"(SSH_AUTH_SOCK|SSH_AGENT_PID)=([^;]+);", started.stdout))
    key = keygen(tmp_path / "git_key", "git-key-of-the-test")
    subprocess.run(["ssh-add", str(key)], env={**os.environ, **env}, check=True,
                   capture_output=True)
    yield env
    os.kill(int(env["SSH_AGENT_PID"]), signal.SIGTERM)


def test_the_agent_is_forwarded_only_when_asked(sshd, settings, agent):
    add_box(settings, sshd)
    plain = gpubox("ssh", "b1", "--", "ssh-add", "-l", env=agent)
    assert plain.returncode != 0 and "git-key-of-the-test" not in plain.stdout
    forwarded = gpubox("ssh", "b1", "-A", "--", "ssh-add", "-l", env=agent)
    assert forwarded.returncode == 0, forwarded.stderr
    assert "git-key-of-the-test" in forwarded.stdout
    by_setting = gpubox("ssh", "b1", "--", "ssh-add", "-l",
                        env={**agent, "GPUBOX_FORWARD_AGENT": "1"})
    assert "git-key-of-the-test" in by_setting.stdout


def test_no_agent_here_is_said(sshd, settings):
    add_box(settings, sshd)
    result = gpubox("ssh", "b1", "-A", "--", "true", env={"SSH_AUTH_SOCK": ""})
    assert result.returncode == 0
    assert "no SSH agent runs here" in result.stderr
