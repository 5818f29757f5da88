"""Time the bootstrap on this machine as a host: fresh, step by step, then already set up.

Runs the real bootstrap through gpubox.setup.run_setup and the LocalRunner in a
temporary HOME, with the torch CPU wheel from /opt/wheels served as the torch index
and the notebooks zip served on 127.0.0.1 (nothing leaves the machine but uv's
lookups of PyPI for what its cache lacks). Prints a table of the markers' seconds.

    PYTHONPATH=. python benchmarks/bootstrap.py [--runs-after 3]   (from the repo root)
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

from gpubox import setup
from gpubox.remote.runner import LocalRunner
from tests.test_bootstrap import (
    as_host,
    free_port,
    host_settings,
    jupyter_status,
    kill_host_servers,
    make_site,
    serve,
)


def timed_run(home: Path, settings) -> tuple[setup.SetupResult, float]:
    start = time.perf_counter()
    with as_host(home):
        result = setup.run_setup(LocalRunner(), settings, box_name="bench")
    token = setup.jupyter_token(settings, "bench")
    assert jupyter_status(settings.jupyter_port, token) == 200  # a working URL, not just markers
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs-after", type=int, default=3, help="runs on the set-up host")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "site").mkdir()
        make_site(root / "site")
        home = root / "home"
        home.mkdir()
        with serve(root / "site") as base_url:
            settings = host_settings(root / "gpubox-home", base_url, free_port())
            try:
                fresh, fresh_total = timed_run(home, settings)
                again = [timed_run(home, settings) for _ in range(args.runs_after)]
            finally:
                kill_host_servers(home)
    print(f"machine: {platform.platform()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"{'step':<10} {'fresh (s)':>10} {'again (s)':>10}  fresh result")
    for step in setup.STEPS:
        first = fresh.finished(step)
        later = again[-1][0].finished(step) if again else None
        print(f"{step:<10} {first.seconds:>10.3f} {later.seconds if later else 0:>10.3f}  "
              f"{first.status}: {first.msg[:60]}")
    print(f"{'total':<10} {fresh_total:>10.2f} " +
          " ".join(f"{t:.2f}" for _, t in again) + "  (wall, to a Jupyter answering 200)")


if __name__ == "__main__":
    main()
