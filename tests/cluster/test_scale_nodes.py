"""`gpubox scale NAME --nodes`: torchrun across the first K nodes of a box, for real.

Two hosts in network namespaces the test makes (tests/netns.py), each with its own
sshd and address; the real torchrun with gloo, one CPU process per node.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.netns import netns_pair  # noqa: F401 - the fixture

pytestmark = [pytest.mark.sshd]


def gpubox(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gpubox", *args], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.mark.slow
def test_scale_across_one_and_two_nodes_reports_two_rows(netns_pair, isolation):  # noqa: F811
    pytest.importorskip("torch", reason="needs torch (pip install torch==2.13.0)")
    first, second = netns_pair.hosts
    made = gpubox("up", "duo", "--host", f"root@{first.address}", "--host",
                  f"root@{second.address}", "--key", str(netns_pair.key_path), "--no-setup")
    assert made.returncode == 0, made.stderr

    done = gpubox("scale", "duo", "--nodes", "1,2", "--quick", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    rec = json.loads(done.stdout)
    rows = rec["points"]["nodes"]
    assert [(p["count"], p["backend"], p["device"]) for p in rows] == [
        (1, "gloo", "cpu"), (2, "gloo", "cpu")]
    assert rec["nodes"] == 2 and rec["processes_per_node"] == 1
    one, two = rows
    assert one["speedup"] == 1.0 and one["busbw_gbps"] is None
    assert two["images_per_s"] > 0 and two["busbw_gbps"] > 0
    assert two["efficiency"] == pytest.approx(two["speedup"] / 2)
    # Node 1 really trained: rank 1 of the two-node run was started there.
    logs = sorted((isolation / "cache" / "logs" / "run").glob("duo-*/node-1.log"))
    assert len(logs) == 1, logs  # only the two-node run used node 1
    # It is stored like any scale result.
    stored = subprocess.run(
        [sys.executable, "-c", "from gpubox.config import load; "
         "from gpubox.state import open_state; s = open_state(load().state_path); "
         "print(len(s.bench_results('scale')))"], capture_output=True, text=True, timeout=60)
    assert stored.stdout.strip() == "1", stored.stderr


def test_nodes_past_what_the_box_has_is_a_clear_error(sshd, isolation):
    made = gpubox("up", "solo", "--host", f"{sshd.user}@127.0.0.1:{sshd.port}",
                  "--key", str(sshd.key_path), "--no-setup")
    assert made.returncode == 0, made.stderr
    done = gpubox("scale", "solo", "--nodes", "1,2")
    assert done.returncode != 0
    assert "--nodes 2: 'solo' has 1 node" in done.stderr
    assert "--host A --host B" in done.stderr.replace("\n", " ")
    both = gpubox("scale", "solo", "--nodes", "2", "--gpus", "1")
    assert both.returncode == 2 and "not both" in both.stderr
    bad = gpubox("scale", "solo", "--nodes", "0")
    assert bad.returncode == 2 and "--nodes 0: counts start at 1" in bad.stderr
    assert "Traceback" not in done.stderr + both.stderr + bad.stderr
