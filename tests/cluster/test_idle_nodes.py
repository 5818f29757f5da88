"""The idle guard of a box of several nodes: a node 1.. stays up while node 0's sshd
answers, and stops after its own idle limit once node 0 has gone.

The agent runs for real (its script, its files, a test clock, a recording stop
command, as tests/agent/test_stop.py); node 0 is a real sshd that the test stops.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from tests.agent.agent_modules import SCRIPT
from tests.sshd import free_port

pytestmark = [pytest.mark.sshd]


@pytest.fixture
def agent(tmp_path):
    home, clock = tmp_path / "agent-home", tmp_path / "clock"
    clock.write_text(str(time.time()))
    env = {**os.environ, "GPUBOX_AGENT_HOME": str(home), "GPUBOX_AGENT_CLOCK": str(clock),
           "HOME": str(tmp_path)}
    env.pop("GPUBOX_IDLE_STOP_COMMAND", None)

    def run(*args):
        done = subprocess.run([sys.executable, str(SCRIPT), *args], env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])

    def advance(seconds):
        clock.write_text(str(float(clock.read_text()) + seconds))

    run.advance = advance
    return run


def test_a_node_waits_for_node_0_then_stops_after_its_own_limit(agent, sshd_factory, tmp_path):
    node0 = sshd_factory()
    stopped = tmp_path / "stopped"
    agent("install", "--idle-minutes", "10", "--mode", "none", "--box-name", "pair-1",
          "--jupyter-url", f"http://127.0.0.1:{free_port()}",
          "--stop-command", f"echo stopped >> {stopped}", "--follow", f"127.0.0.1:{node0.port}")
    agent.advance(6 * 3600)  # hours with nobody on this node, node 0 up all along
    result = agent("check")
    assert result["actions"] == [] and not stopped.exists()
    status = agent("status")
    assert status["follow"] == f"127.0.0.1:{node0.port}"
    assert "node 0 (127.0.0.1) is up: this node stops only after it" in status["busy"]

    node0.stop()  # node 0 stopped (its guard, or `gpubox stop`): nothing answers
    agent.advance(4 * 60)
    assert [k for k, _ in agent("check")["actions"]] == []  # within its limit: waits
    agent.advance(2 * 60)
    assert [k for k, _ in agent("check")["actions"]] == ["warn"]  # 5 minutes' warning
    agent.advance(5 * 60)
    assert [k for k, _ in agent("check")["actions"]] == ["stop"]
    assert stopped.read_text() == "stopped\n"
    assert "idle for 11m" in agent("status")["last_stop"]["reason"]


def test_something_else_at_node_0s_address_is_not_node_0(agent):
    with socket.socket() as other:  # a listener that is no sshd: no "SSH-" banner
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        agent("install", "--idle-minutes", "10", "--mode", "none",
              "--jupyter-url", f"http://127.0.0.1:{free_port()}", "--follow", f"127.0.0.1:{port}")
        assert not [b for b in agent("status")["busy"] if "node 0" in b]
    # --follow off forgets it.
    agent("install", "--follow", "off", "--mode", "none")
    assert agent("status")["follow"] is None


def test_node_0s_address_for_the_others_is_where_they_reach_its_sshd(sshd, isolation):
    from gpubox import cluster, config
    from gpubox.state import open_state

    host = f"{sshd.user}@127.0.0.1:{sshd.port}"
    made = subprocess.run([sys.executable, "-m", "gpubox", "up", "pair", "--host", host, "--host",
                           host, "--key", str(sshd.key_path), "--no-setup"],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert made.returncode == 0, made.stderr
    settings = config.load()
    state = open_state(settings.state_path)
    try:
        head = cluster.nodes_of(settings, state, "pair")[0].box
        assert cluster.node0_sshd(settings, head) == f"127.0.0.1:{sshd.port}"
    finally:
        state.close()
