"""A box of several ssh hosts, through the real `gpubox` command and a real sshd.

Both nodes are the one loopback sshd under two names (NAME and NAME-1): enough for the
cluster record, the ssh config, status, `run` and `down`. Two separate hosts with
their own addresses are in test_netns.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.sshd,
    pytest.mark.skipif(not os.path.exists("/usr/sbin/sshd"), reason="needs Debian's openssh-server"),
]


def gpubox(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gpubox", *args], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """The loopback sshd, its sessions with a HOME under the test's own folder: `gpubox
    run` keeps its pid files in the node's ~/.gpubox, which must not be this account's."""
    from tests.sshd import _require_sshd, start_sshd

    _require_sshd()
    home = tmp_path_factory.mktemp("pair-home")
    server = start_sshd(tmp_path_factory.mktemp("sshd"), session_env={"HOME": str(home)})
    server.home = home
    try:
        yield server
    finally:
        server.stop()


def up_pair(sshd, name: str = "pair") -> subprocess.CompletedProcess:
    host = f"{sshd.user}@127.0.0.1:{sshd.port}"
    return gpubox("up", name, "--host", host, "--host", host, "--key", str(sshd.key_path),
                  "--no-setup")


def test_two_hosts_are_one_box_with_nodes_in_status_ssh_config_and_down(sshd, isolation):
    made = up_pair(sshd)
    assert made.returncode == 0, made.stderr
    assert "2 nodes: pair, pair-1" in made.stdout

    listed = json.loads(gpubox("status", "--json", "--refresh").stdout)
    assert [(b["name"], b["extra"].get("cluster"), b["extra"].get("node")) for b in listed] == [
        ("pair", "pair", "0"), ("pair-1", "pair", "1")]
    table = gpubox("status").stdout
    assert "└ pair-1" in table
    named = json.loads(gpubox("status", "pair", "--json").stdout)  # the box with its nodes
    assert [b["name"] for b in named] == ["pair", "pair-1"]

    config = (isolation / "data" / "ssh_config").read_text()
    assert "Host pair " in config and "Host pair-1 " in config
    plain = subprocess.run(["ssh", "-F", str(isolation / "data" / "ssh_config"), "-o",
                            "BatchMode=yes", "pair-1", "echo", "node-one"],
                           capture_output=True, text=True, timeout=60)
    assert plain.stdout.strip() == "node-one", plain.stderr

    again = up_pair(sshd)  # the same hosts again: found, nothing doubled
    assert again.returncode == 0, again.stderr
    assert len(json.loads(gpubox("status", "--json", "--refresh").stdout)) == 2

    down = gpubox("down", "pair")
    assert down.returncode == 0, down.stderr
    assert json.loads(gpubox("status", "--json", "--refresh").stdout) == []
    assert "pair" not in (isolation / "data" / "ssh_config").read_text()


def test_run_sets_rank_and_addresses_and_returns_the_first_failure(sshd, isolation):
    assert up_pair(sshd).returncode == 0
    # One word: a shell line, expanded by each node's bash.
    ran = gpubox("run", "pair", "--port", "29999", "--",
                 "echo rank=$GPUBOX_NODE_RANK/$GPUBOX_NUM_NODES ips=$GPUBOX_NODE_IPS "
                 "master=$MASTER_ADDR:$MASTER_PORT gpus=$GPUBOX_GPUS_PER_NODE; "
                 "exit $((GPUBOX_NODE_RANK * 3))")
    assert ran.returncode == 3, ran.stderr  # node 1 exits 3, node 0 exits 0
    assert ran.stdout.strip() == (
        "rank=0/2 ips=127.0.0.1,127.0.0.1 master=127.0.0.1:29999 gpus=0")
    logs = sorted((isolation / "cache" / "logs" / "run").glob("pair-*/node-*.log"))
    assert [p.name for p in logs] == ["node-0.log", "node-1.log"]
    assert logs[1].read_text().startswith("rank=1/2 ")
    assert "node 1 ('pair-1'): exit status 3" in ran.stderr
    assert str(logs[0].parent) in ran.stderr.replace("\n", "")


def test_ctrl_c_stops_the_command_on_every_node(sshd, isolation, tmp_path):
    assert up_pair(sshd).returncode == 0
    marks = tmp_path / "marks"
    marks.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpubox", "run", "pair", "--",
         f"echo $$ > {marks}/$GPUBOX_NODE_RANK; echo started; sleep 300"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    # The shell makes each file before `echo` has written the pid into it.
    written = lambda: [p for p in marks.iterdir() if p.read_text().strip()]  # noqa: E731
    while len(written()) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    pids = [int(p.read_text()) for p in sorted(marks.iterdir())]
    assert len(pids) == 2
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "stopped on every node" in err and "Traceback" not in err
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in pids if Path(f"/proc/{pid}").exists()]


def test_a_node_that_cannot_be_reached_is_named_and_nothing_is_kept(sshd, isolation):
    from tests.sshd import free_port

    good = f"{sshd.user}@127.0.0.1:{sshd.port}"
    bad = f"{sshd.user}@127.0.0.1:{free_port()}"  # nothing listens there
    made = gpubox("up", "pair", "--host", good, "--host", bad, "--key", str(sshd.key_path),
                  "--no-setup")
    assert made.returncode != 0
    assert "node 1 ('pair-1', " in made.stderr and bad in made.stderr
    assert "Traceback" not in made.stderr
    assert json.loads(gpubox("status", "--json", "--refresh").stdout) == []


def test_nodes_zero_and_nodes_of_this_machine_are_clear_errors(isolation):
    made = gpubox("up", "pair", "--nodes", "0", "--type", "p4d.24xlarge")
    assert made.returncode == 2
    assert "--nodes 0: a box needs at least one node" in made.stderr
    local = gpubox("up", "pair", "--nodes", "2", "--provider", "local", "--no-setup")
    assert local.returncode == 2 and "has no further nodes" in local.stderr
    assert "Traceback" not in made.stderr + local.stderr


def test_a_one_machine_box_runs_as_rank_0_of_1(sshd, isolation):
    made = gpubox("up", "solo", "--host", f"{sshd.user}@127.0.0.1:{sshd.port}",
                  "--key", str(sshd.key_path), "--no-setup")
    assert made.returncode == 0, made.stderr
    ran = gpubox("run", "solo", "--", "echo $GPUBOX_NODE_RANK/$GPUBOX_NUM_NODES $MASTER_ADDR")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "0/1 127.0.0.1"
    # Several words are a program and its arguments: a `$` in them stays a `$`.
    said = gpubox("run", "solo", "--", "echo", "$MASTER_ADDR", "a  b")
    assert said.stdout == "$MASTER_ADDR a  b\n", said.stderr


def test_run_keeps_quotes_and_uses_the_box_environment_first_on_path(sshd, isolation):
    """`gpubox run demo -- python -c "import os; print(1)"`: the words reach the node as
    they are (the quotes, the `;`), and `python` is the box's framework environment's.
    That environment is a real venv at the node's ~/.gpubox/venv, made here the way the
    bootstrap makes it (without the packages, which this test does not need); the sshd
    session's PATH is sshd's own default, on which no `python` is the venv's."""
    made = gpubox("up", "demo", "--host", f"{sshd.user}@127.0.0.1:{sshd.port}",
                  "--key", str(sshd.key_path), "--no-setup")
    assert made.returncode == 0, made.stderr
    box_env = sshd.home / ".gpubox" / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(box_env)], check=True)
    try:
        plain = gpubox("run", "demo", "--", "python", "-c", "import os; print(1)")
        assert (plain.returncode, plain.stdout) == (0, "1\n"), plain.stdout + plain.stderr
        quoted = gpubox("run", "demo", "--", "python", "-c",
                        "import sys; print(sys.prefix); print(\"it's a b;c\", 'x  y')")
        assert quoted.returncode == 0, quoted.stderr
        assert quoted.stdout.splitlines() == [str(box_env), "it's a b;c x  y"]
        # A shell line sees the same PATH, and so do the programs it starts.
        line = gpubox("run", "demo", "--", "command -v python; bash -c 'command -v python3'")
        assert line.stdout.splitlines() == [f"{box_env}/bin/python",
                                            f"{box_env}/bin/python3"], line.stderr
    finally:
        import shutil

        shutil.rmtree(sshd.home / ".gpubox" / "venv")


def test_two_runs_at_once_keep_two_log_folders(sshd, isolation, tmp_path):
    from gpubox.noderun import new_log_dir

    # Many folders in one go, most of them in the same second: each is its own.
    made = [new_log_dir(tmp_path / "run", "demo") for _ in range(20)]
    assert len({p.name for p in made}) == 20
    assert len({p.name.rsplit("-", 1)[0] for p in made}) < 20  # same second, other suffix
    assert all(p.stat().st_mode & 0o777 == 0o700 for p in made)

    assert gpubox("up", "demo", "--host", f"{sshd.user}@127.0.0.1:{sshd.port}",
                  "--key", str(sshd.key_path), "--no-setup").returncode == 0
    runs = [subprocess.Popen([sys.executable, "-m", "gpubox", "run", "demo", "--",
                              f"sleep 1; echo run-{tag}"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
            for tag in "ab"]
    outs = [r.communicate(timeout=120) for r in runs]
    assert [r.returncode for r in runs] == [0, 0], outs
    assert [o[0] for o in outs] == ["run-a\n", "run-b\n"]
    logs = sorted((isolation / "cache" / "logs" / "run").glob("demo-*/node-0.log"))
    assert sorted(p.read_text() for p in logs) == ["run-a\n", "run-b\n"]
    for (_, err), log in zip(outs, sorted(logs, key=lambda p: p.read_text()), strict=True):
        assert str(log.parent) in err.replace("\n", "")


def test_run_names_a_node_that_cannot_be_reached(sshd, sshd_factory, isolation):
    other = sshd_factory(user_key=sshd.key_path)
    made = gpubox("up", "pair", "--host", f"{sshd.user}@127.0.0.1:{sshd.port}",
                  "--host", f"{other.user}@127.0.0.1:{other.port}",
                  "--key", str(sshd.key_path), "--no-setup")
    assert made.returncode == 0, made.stderr
    other.stop()  # node 1 goes away after `up`
    ran = gpubox("run", "pair", "--", "echo hello")
    assert ran.returncode != 0
    assert "node 1 ('pair-1')" in ran.stderr and "Traceback" not in ran.stderr
