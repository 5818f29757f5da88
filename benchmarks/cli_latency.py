"""How fast the command line answers: `gpubox --help` and `gpubox status --cached`.

Runs each command N times as a subprocess in a throw-away GPUBOX_HOME (with a few
boxes in the cache) and prints min / median / max wall time, and which heavy modules
each command imported. Usage: python benchmarks/cli_latency.py [N]
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

COMMANDS = {
    "gpubox --help": ["--help"],
    "gpubox status --cached": ["status", "--cached"],
    "gpubox status --cached --json": ["status", "--cached", "--json"],
}


def seed(home: str) -> None:
    env = {**os.environ, "GPUBOX_HOME": home}
    code = (
        "from gpubox import config\n"
        "from gpubox.state import State\n"
        "from gpubox.providers.base import Box, BoxState\n"
        "s = State(config.load().state_path)\n"
        "for i in range(5):\n"
        "    s.remember(Box(f'box{i}', 'aws', BoxState.RUNNING, type='g4dn.xlarge',"
        " region='us-east-1', address='203.0.113.%d' % i, price_per_hour=0.526))\n"
    )
    subprocess.run([sys.executable, "-c", code], env=env, check=True)


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    with tempfile.TemporaryDirectory() as home:
        seed(home)
        env = {**os.environ, "GPUBOX_HOME": home, "AWS_EC2_METADATA_DISABLED": "true"}
        print(f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cores, "
              f"Python {platform.python_version()}")
        print(f"{'command':34} {'min':>7} {'median':>7} {'max':>7}  heavy imports")
        for label, args in COMMANDS.items():
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                subprocess.run([sys.executable, "-m", "gpubox", *args], env=env,
                               capture_output=True, check=True)
                times.append(time.perf_counter() - start)
            probe = subprocess.run(
                [sys.executable, "-c",
                 "import sys\nfrom gpubox.cli.main import run\n"
                 f"try:\n    run({args!r})\nexcept SystemExit:\n    pass\n"
                 "print([m for m in ('boto3','botocore','rich','jupyter_server') "
                 "if m in sys.modules], file=sys.stderr)"],
                env=env, capture_output=True, text=True,
            )
            heavy = probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else "?"
            print(f"{label:34} {min(times)*1000:6.0f}ms {statistics.median(times)*1000:6.0f}ms "
                  f"{max(times)*1000:6.0f}ms  {heavy}")


if __name__ == "__main__":
    main()
