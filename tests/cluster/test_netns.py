"""Multi-node for real: two hosts with their own addresses (network namespaces the test
makes, each with its own sshd), made one box by the real `gpubox up --host --host`,
then PyTorch's own torchrun training across both with gloo through `gpubox run`.

In the torchrun test the hosts' system Python has no torch (their PATH's python is a
bare venv, see tests/netns.py); torch and `torchrun` are only in the box's framework
environment at ~/.gpubox/venv, where the bootstrap puts them. So the training runs only
if `gpubox run` runs the command in the box's environment.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from tests.netns import NODE_IFACE, netns_pair  # noqa: F401 - the fixture
from tests.test_bootstrap import TORCH_WHEEL
from tests.venvs import venv_seeing_this_python

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


def make_box_env(folder):
    """The box's framework environment as the bootstrap leaves it: a venv with torch
    installed into it by pip (so its bin/ has the real `torchrun` console script). pip
    installs the local torch CPU wheel --no-deps; torch's small dependencies come from
    this python's site-packages (tests/venvs.py: also when the suite runs in a venv), like
    the bootstrap's venv on a host whose python has them. The hosts' PATH python (a bare
    venv) sees none of it."""
    python = venv_seeing_this_python(folder, pip=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps",
                    "--no-index", "--force-reinstall", str(TORCH_WHEEL)], check=True)


@pytest.mark.skipif(not TORCH_WHEEL.is_file(), reason="needs the torch CPU wheel in /opt/wheels")
@pytest.mark.parametrize("netns_pair", ["python-without-torch"], indirect=True)
def test_torchrun_trains_across_two_hosts_through_gpubox_run(netns_pair, isolation, tmp_path):  # noqa: F811
    first, second = netns_pair.hosts
    box_env = tmp_path / "box-env"
    make_box_env(box_env)
    for host in (first, second):  # the two hosts share this filesystem: one env, linked
        (host.home / ".gpubox").mkdir()
        (host.home / ".gpubox" / "venv").symlink_to(box_env)
    made = gpubox("up", "duo", "--host", f"root@{first.address}", "--host",
                  f"root@{second.address}", "--key", str(netns_pair.key_path), "--no-setup")
    assert made.returncode == 0, made.stderr
    listed = json.loads(gpubox("status", "--json", "--cached").stdout)
    assert [(b["name"], b["address"]) for b in listed] == [
        ("duo", first.address), ("duo-1", second.address)]

    # The hosts' own python has no torch, and no torchrun is on their PATH.
    bare = gpubox("ssh", "duo-1", "--",
                  "command -v torchrun || echo no-torchrun; python3 -c 'import torch'")
    assert bare.stdout.strip() == "no-torchrun", bare.stdout
    assert bare.returncode != 0 and "No module named 'torch'" in bare.stderr, bare.stderr

    for host in (first, second):  # the script, where each node's shell starts
        (host.home / "train.py").write_text(TRAIN)
    # As docs/multi-node.md says it: the nodes' count, rank and rendezvous reach torchrun
    # from gpubox (its PET_* defaults). One word: a shell line, `~` is each node's home.
    ran = gpubox("run", "duo", "--", f"cd ~ && GLOO_SOCKET_IFNAME={NODE_IFACE} torchrun train.py")
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
    # Node 1 was in use when it reported; the seconds since then (under load, one or
    # two) are all the idle time node 0 can show for it.
    idle = re.search(r"node 1: idle (\d+)s", shown.stdout)
    assert idle and int(idle.group(1)) < 30, shown.stdout

    done = gpubox("ssh", "duo-1", "--", f"python3 ~/.gpubox/agent/keep.py off && {agent} check")
    assert done.returncode == 0, done.stdout + done.stderr
    shown = gpubox("autostop", "duo")
    assert "node 1:" in shown.stdout and "in use" not in shown.stdout, shown.stdout
    assert not stopped.exists()
    assert gpubox("down", "duo").returncode == 0
