"""How fast the command line answers, and what it imports to answer.

Runs each command N times (default 15) as a subprocess and prints min / median / max
wall time, the median over bare Python (`python -c pass`, the floor) and the median CPU
time. Commands:
`gpubox --help`; `gpubox status` in an empty HOME (nothing there, no AWS credentials:
what a new user meets first); `status --cached` with five boxes in the cache. Then one
`python -X importtime` run of each: how many modules it imports and whether pydantic,
boto3 or rich is among them.

Usage: python benchmarks/cli_latency.py [N]
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

PROBED = ("pydantic", "boto3", "botocore", "rich", "jupyter_server")


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


def clean_env(home: str) -> dict[str, str]:
    """A new user's environment: HOME empty, no GPUBOX_* and no AWS_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GPUBOX_", "AWS_"))}
    env.update(HOME=home, GPUBOX_HOME=os.path.join(home, "gpubox"))
    return env


def timed(argv: list[str], env: dict[str, str], runs: int) -> tuple[list[float], float]:
    """Wall times of each run, and the median CPU time (user + system) the command used:
    on a shared machine the CPU time moves much less with the load than the wall time."""
    times, cpu = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(argv, env=env, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return times, statistics.median(cpu)


def imports(args: list[str], env: dict[str, str]) -> tuple[int, list[str]]:
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "gpubox", *args],
                          env=env, capture_output=True, text=True)  # fmt: skip
    names = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()
             if line.startswith("import time:")]  # fmt: skip
    return len(names), [p for p in PROBED if any(n.split(".")[0] == p for n in names)]


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    with tempfile.TemporaryDirectory() as empty, tempfile.TemporaryDirectory() as cached:
        seed(cached)
        new_user = clean_env(empty)
        with_cache = {**clean_env(empty), "GPUBOX_HOME": cached}
        import typer

        print(f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cores, "
              f"Python {platform.python_version()}, typer {typer.__version__}, "
              f"load average {os.getloadavg()[0]:.1f} at start")
        bare_times, bare_cpu = timed([sys.executable, "-c", "pass"], new_user, runs)
        bare = statistics.median(bare_times)
        print(f"{'command':30} {'min':>6} {'median':>7} {'max':>6} {'over bare':>9} "
              f"{'cpu':>6}  modules  heavy imports")
        print(f"{'python -c pass':30} {'':>6} {bare * 1000:5.0f}ms {'':>6} {'':>9} "
              f"{bare_cpu * 1000:4.0f}ms")
        cases = {
            "gpubox --help": (["--help"], new_user),
            "gpubox status (empty HOME)": (["status"], new_user),
            "gpubox status --cached (5)": (["status", "--cached"], with_cache),
        }
        for label, (args, env) in cases.items():
            times, cpu = timed([sys.executable, "-m", "gpubox", *args], env, runs)
            median = statistics.median(times)
            count, heavy = imports(args, env)
            print(f"{label:30} {min(times) * 1000:4.0f}ms {median * 1000:5.0f}ms "
                  f"{max(times) * 1000:4.0f}ms {(median - bare) * 1000:7.0f}ms "
                  f"{cpu * 1000:4.0f}ms  {count:7d}  {', '.join(heavy) or 'none'}")
        print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
