"""Multi-node for real: two hosts with their own addresses (network namespaces the test
makes, each with its own sshd), made one box by the real `gpubox up --host --host`,
then PyTorch's own torchrun training across both with gloo through `gpubox run`.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from tests.netns import NODE_IFACE, netns_pair  # noqa: F401 - the fixture

torch = pytest.importorskip("torch", reason="needs torch (pip install torch==2.13.0)")

pytestmark = [pytest.mark.sshd, pytest.mark.slow]

TRAIN = '''
import os, torch, torch.distributed as dist
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
torch.manual_seed(0)
model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
x = torch.randn(16, 4) + rank
for _ in range(3):
    opt.zero_grad()
    model(x).pow(2).mean().backward()
    opt.step()
total = torch.tensor([float(rank + 1)])
dist.all_reduce(total)
weights = ",".join(f"{v:.6f}" for v in model.module.weight.detach().flatten().tolist())
print(f"rank {rank}/{world} node {os.environ['GPUBOX_NODE_RANK']} "
      f"allreduce {total.item():.0f} weights {weights}", flush=True)
# As gpubox's own payload_ddp.py does: every rank done before any tears down, then no
# C++ destructors at exit (torch 2.13's gloo sometimes aborts a rank there, after its work).
dist.barrier()
dist.destroy_process_group()
os._exit(0)
'''


def gpubox(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gpubox", *args], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def test_torchrun_trains_across_two_hosts_through_gpubox_run(netns_pair, isolation):  # noqa: F811
    first, second = netns_pair.hosts
    made = gpubox("up", "duo", "--host", f"root@{first.address}", "--host",
                  f"root@{second.address}", "--key", str(netns_pair.key_path), "--no-setup")
    assert made.returncode == 0, made.stderr
    listed = json.loads(gpubox("status", "--json", "--cached").stdout)
    assert [(b["name"], b["address"]) for b in listed] == [
        ("duo", first.address), ("duo-1", second.address)]

    for host in (first, second):  # the script, where each node's shell starts
        (host.home / "train.py").write_text(TRAIN)
    ran = gpubox(
        "run", "duo", "--",
        f"cd ~ && GLOO_SOCKET_IFNAME={NODE_IFACE} python -m torch.distributed.run",
        "--nnodes", "2", "--nproc-per-node", "1", "--node-rank", "$GPUBOX_NODE_RANK",
        "--master-addr", "$MASTER_ADDR", "--master-port", "$MASTER_PORT", "train.py")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    line = re.compile(r"rank (\d)/2 node (\d) allreduce 3 weights (\S+)")
    on_zero = line.findall(ran.stdout)
    assert [(r, n) for r, n, _ in on_zero] == [("0", "0")], ran.stdout
    logs = sorted((isolation / "cache" / "logs" / "run").glob("duo-*/node-1.log"))
    on_one = line.findall(logs[0].read_text())
    assert [(r, n) for r, n, _ in on_one] == [("1", "1")], logs[0].read_text()
    # DDP kept the two replicas equal although each saw different data.
    assert on_zero[0][2] == on_one[0][2]

    down = gpubox("down", "duo")
    assert down.returncode == 0, down.stderr
    assert json.loads(gpubox("status", "--json", "--refresh").stdout) == []


def test_autostop_makes_the_nodes_one_box_that_is_idle_only_when_every_node_is(
        netns_pair, isolation, tmp_path, monkeypatch):  # noqa: F811
    """`gpubox autostop` on two hosts with addresses of their own: node 1 reports its use
    to node 0 over the link between them (its own ssh, node 0's pinned key), and node 0's
    guard shows node 1's work as its own."""
    first, second = netns_pair.hosts
    stopped = tmp_path / "stopped"
    monkeypatch.setenv("GPUBOX_IDLE_STOP_COMMAND", f"echo stop >> {stopped}")
    made = gpubox("up", "duo", "--host", f"root@{first.address}", "--host",
                  f"root@{second.address}", "--key", str(netns_pair.key_path), "--no-setup")
    assert made.returncode == 0, made.stderr

    set_limit = gpubox("autostop", "duo", "30m")
    assert set_limit.returncode == 0, set_limit.stdout + set_limit.stderr
    assert "its 2 nodes are one box" in set_limit.stdout
    keys = (first.home / ".ssh/authorized_keys").read_text()
    assert 'restrict,command="env GPUBOX_AGENT_HOME=' in keys and keys.count("\n") == 1

    agent = "python3 ~/.gpubox/agent/idle.py"
    kept = gpubox("ssh", "duo-1", "--", f"python3 ~/.gpubox/agent/keep.py 2h && {agent} check")
    assert kept.returncode == 0, kept.stdout + kept.stderr
    shown = gpubox("autostop", "duo")
    assert shown.returncode == 0, shown.stderr
    assert "in use: node 1: gpubox-keep until" in " ".join(shown.stdout.split()), shown.stdout
    assert "node 1: idle 0s" in shown.stdout

    done = gpubox("ssh", "duo-1", "--", f"python3 ~/.gpubox/agent/keep.py off && {agent} check")
    assert done.returncode == 0, done.stdout + done.stderr
    shown = gpubox("autostop", "duo")
    assert "node 1:" in shown.stdout and "in use" not in shown.stdout, shown.stdout
    assert not stopped.exists()
    assert gpubox("down", "duo").returncode == 0
