"""What a box of several nodes pays for "idle only when every node is": the time of one
idle check on a node 1.. with and without its report to node 0, and on node 0 with and
without a node's report to read.

Two agents (two homes) on this machine; node 0 behind a real sshd on a loopback port
(tests/sshd.py's), node 1 reporting to it with its own key (remote/agent/idle_peers.py).
Prints a Markdown table for docs/multi-node.md.

    PYTHONPATH=src:. python benchmarks/idle_report.py [--runs 20]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.agent.agent_modules import SCRIPT
from tests.sshd import free_port, start_sshd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="gpubox-idle-report-"))
    homes = [root / "node0", root / "node1"]
    for home in homes:
        home.mkdir()
    server = start_sshd(root / "sshd", session_env={"HOME": str(homes[0])})
    dead = f"http://127.0.0.1:{free_port()}"

    def on(node: int, *argv: str) -> dict:
        env = {**os.environ, "GPUBOX_AGENT_HOME": str(homes[node] / ".gpubox"),
               "HOME": str(homes[node])}  # fmt: skip
        done = subprocess.run([sys.executable, str(SCRIPT), *argv], env=env, check=True,
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        return json.loads(done.stdout.strip().splitlines()[-1])

    def timed(node: int) -> float:
        times = []
        for _ in range(args.runs):
            started = time.perf_counter()
            on(node, "check")
            times.append(time.perf_counter() - started)
        return statistics.median(times) * 1000

    try:
        for node in (0, 1):
            on(node, "install", "--idle-minutes", "60", "--mode", "none", "--jupyter-url", dead,
               "--stop-command", "true")
        rows = [("node 1: check alone", timed(1)), ("node 0: check alone", timed(0))]
        public = on(1, "peer-key", "--node", "1")["public_key"]
        on(0, "peer-accept", "--node", "1", "--key", public)
        on(1, "install", "--mode", "none", "--follow", f"127.0.0.1:{server.port}",
           "--report-user", server.user, "--report-host-key", server.host_key_line,
           "--node", "1")
        rows.append(("node 1: check and report to node 0 (ssh)", timed(1)))
        rows.append(("node 0: check reading node 1's report", timed(0)))
        assert on(1, "status")["report_error"] is None
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    print(f"{platform.node()}, {os.cpu_count()} cores, median of {args.runs}:\n")
    print("| idle check | ms |\n| --- | --- |")
    for what, ms in rows:
        print(f"| {what} | {ms:.0f} |")


if __name__ == "__main__":
    main()
