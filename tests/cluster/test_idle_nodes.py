"""The idle guard of a box of several nodes: a node 1.. is held while node 0's sshd
answers and reports its own use to node 0; node 0 stops the box once every node has
been idle its limit, and the others follow it down (after the 5 minutes' warning).

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
from tests.cluster.nodes import node0_sshd_of
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


def test_a_node_is_held_while_node_0_is_up_and_stops_soon_after_it_when_idle_itself(
        agent, sshd_factory, tmp_path):
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
    # Being held is not use: this node's own idle time has run all along.
    assert status["idle_seconds"] >= 6 * 3600

    port = node0.port
    node0.stop()  # node 0 stopped (every node idle, or `gpubox stop`): nothing answers
    agent.advance(60)
    assert [k for k, _ in agent("check")["actions"]] == ["warn"]  # idle itself for hours
    # Node 0 back within the warning (a reboot): held again, the warning is taken back.
    node0 = sshd_factory(port=port)
    agent.advance(60)
    assert [k for k, _ in agent("check")["actions"]] == ["clear"]
    node0.stop()
    agent.advance(60)
    assert [k for k, _ in agent("check")["actions"]] == ["warn"]
    agent.advance(4 * 60)
    assert [k for k, _ in agent("check")["actions"]] == []  # the 5 minutes' warning runs
    agent.advance(60)
    assert [k for k, _ in agent("check")["actions"]] == ["stop"]
    assert stopped.read_text() == "stopped\n"
    assert "idle for 6h" in agent("status")["last_stop"]["reason"]


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
    host = f"{sshd.user}@127.0.0.1:{sshd.port}"
    made = subprocess.run([sys.executable, "-m", "gpubox", "up", "pair", "--host", host, "--host",
                           host, "--key", str(sshd.key_path), "--no-setup"],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert made.returncode == 0, made.stderr
    assert node0_sshd_of("pair") == f"127.0.0.1:{sshd.port}"


# --- node 0 decides with every node's use (idle_peers.py) ------------------------------
# Two agents with homes of their own on this machine and one test clock; node 0 is a real
# sshd whose sessions have node 0's HOME, so the report key node 0 authorises lands in
# its ~/.ssh/authorized_keys and the report runs as its forced command.

MIN = 60


@pytest.fixture
def pair(sshd_factory, tmp_path):
    clock = tmp_path / "clock"
    clock.write_text(str(time.time()))
    homes = [tmp_path / "node0", tmp_path / "node1"]
    for home in homes:
        home.mkdir()
    server = sshd_factory(session_env={"HOME": str(homes[0])})
    dead = f"http://127.0.0.1:{free_port()}"

    def on(node, *args, check=True):
        home = homes[node]
        env = {**os.environ, "GPUBOX_AGENT_HOME": str(home / ".gpubox"), "HOME": str(home),
               "GPUBOX_AGENT_CLOCK": str(clock)}
        env.pop("GPUBOX_IDLE_STOP_COMMAND", None)
        script = SCRIPT if args[0] != "keep" else SCRIPT.parent / "keep.py"
        done = subprocess.run([sys.executable, str(script), *args[args[0] == "keep":]], env=env,
                              capture_output=True, text=True, timeout=60)
        if check:
            assert done.returncode == 0, done.stderr
        lines = done.stdout.strip().splitlines()
        return json.loads(lines[-1]) if lines and lines[-1].startswith("{") else done

    for node in (0, 1):
        on(node, "install", "--idle-minutes", "10", "--mode", "none", "--jupyter-url", dead,
           "--stop-command", f"echo stopped >> {tmp_path / f'stopped{node}'}")
    public = on(1, "peer-key", "--node", "1")["public_key"]
    on(0, "peer-accept", "--node", "1", "--key", public)
    on(1, "install", "--mode", "none", "--follow", f"127.0.0.1:{server.port}",
       "--report-user", server.user, "--report-host-key", server.host_key_line, "--node", "1")

    def advance(seconds):
        clock.write_text(str(float(clock.read_text()) + seconds))

    def stopped(node):
        return (tmp_path / f"stopped{node}").exists()

    on.advance, on.stopped, on.server, on.homes = advance, stopped, server, homes
    return on


def poll(pair):
    """One poll on each node, node 1 first (its report goes over ssh to node 0)."""
    return [k for k, _ in pair(1, "check")["actions"]], [k for k, _ in pair(0, "check")["actions"]]


def test_node_0_stops_the_box_only_once_every_node_has_been_idle_its_limit(pair):
    # Before node 1 has ever reported, node 0 does not know: unknown, its limit doubled.
    assert "node 1 has not reported its use (never)" in pair(0, "status")["uncertain"]

    pair(1, "keep", "2h")  # someone works on node 1 (gpubox-keep there)
    for _ in range(12):  # an hour of 5-minute polls: node 0 idle itself all along
        pair.advance(5 * MIN)
        assert poll(pair) == ([], [])
    status = pair(0, "status")
    assert any(b.startswith("node 1: gpubox-keep until") for b in status["busy"]), status["busy"]
    assert status["uncertain"] == [] and [p["node"] for p in status["peers"]] == [1]
    assert pair(1, "status")["report_error"] is None

    pair(1, "keep", "off")  # node 1's work is done: from here every node is idle
    seen = []
    for _ in range(2):
        pair.advance(5 * MIN)
        seen.append(poll(pair))
    # Node 1 was last seen in use a poll ago: node 0 warns 5 minutes later (5 minutes
    # before its limit) and stops at its limit; node 1 waits for node 0.
    assert seen == [([], ["warn"]), ([], ["stop"])], seen
    assert pair.stopped(0) and not pair.stopped(1)
    assert "nodes 1 idle too" in pair(0, "status")["last_stop"]["reason"]


def test_a_node_that_stops_reporting_is_unknown_on_node_0_never_busy(pair):
    pair(1, "keep", "2h")
    assert poll(pair) == ([], [])
    pair.server.stop()  # node 1 can no longer reach node 0 (nor does it follow it now)
    pair.advance(5 * MIN)
    pair(1, "check")
    assert "node 0 counts this node as unknown" in (
        pair.homes[1] / ".gpubox/logs/idle.log").read_text()
    assert pair(1, "status")["report_error"]
    # Node 0 (its agent still runs: the sshd was only its door) has a stale report.
    pair.advance(5 * MIN)
    status = pair(0, "status")
    assert status["uncertain"] == ["node 1 has not reported its use (for 10m)"]
    assert not [b for b in status["busy"] if b.startswith("node 1")]


def test_the_report_key_runs_the_report_and_nothing_else(pair):
    key = pair.homes[1] / ".gpubox/peer/id_ed25519"
    base = ["ssh", "-F", "/dev/null", "-i", str(key), "-p", str(pair.server.port),
            "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", f"{pair.server.user}@127.0.0.1"]
    asked = subprocess.run(base + ["id; echo shell-ran"], capture_output=True, text=True,
                           timeout=30, input="")
    assert "shell-ran" not in asked.stdout and "uid=" not in asked.stdout
    assert "not a report" in asked.stderr
    lied = subprocess.run(base, capture_output=True, text=True, timeout=30,
                          input=json.dumps({"node": 7, "idle_seconds": "x"}))
    assert lied.returncode != 0
    # What a report says of itself cannot name another node: the key decides.
    sent = subprocess.run(base, capture_output=True, text=True, timeout=30,
                          input=json.dumps({"node": 7, "idle_seconds": 5, "busy": ["x"] * 99}))
    assert sent.returncode == 0, sent.stderr
    reports = sorted(p.name for p in (pair.homes[0] / ".gpubox/state/peers").iterdir())
    assert reports == ["node-1.json"]
    kept = json.loads((pair.homes[0] / ".gpubox/state/peers/node-1.json").read_text())
    assert len(kept["busy"]) == 20
    # Accepting node 1 again replaces its key: one line per node.
    again = pair(1, "peer-key", "--node", "1")["public_key"]
    pair(0, "peer-accept", "--node", "1", "--key", again)
    lines = (pair.homes[0] / ".ssh/authorized_keys").read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith('restrict,command="env GPUBOX_AGENT_HOME=')


def test_nodes_accepted_at_once_all_keep_their_line_on_node_0(tmp_path):
    """Eight `peer-accept`s as eight real processes at once, as two gpubox commands joining
    a box's nodes at the same time would run them: no line and no node is lost."""
    from tests.sshd import keygen

    home = tmp_path / "node0"
    env = {**os.environ, "GPUBOX_AGENT_HOME": str(home / ".gpubox"), "HOME": str(home)}
    keys = [keygen(tmp_path / f"key{n}", f"node{n}") for n in range(1, 9)]
    procs = [subprocess.Popen([sys.executable, str(SCRIPT), "peer-accept", "--node", str(n),
                               "--key", (tmp_path / f"key{n}.pub").read_text().strip()],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for n, _ in zip(range(1, 9), keys, strict=True)]  # fmt: skip
    for proc in procs:
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
    lines = (home / ".ssh/authorized_keys").read_text().splitlines()
    assert sorted(line.rsplit(" ", 1)[-1] for line in lines) == [str(n) for n in range(1, 9)]
    config = json.loads((home / ".gpubox/state/idle-config.json").read_text())
    assert config["peers"] == list(range(1, 9))
