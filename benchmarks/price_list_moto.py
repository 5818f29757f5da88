"""Time `gpubox status --refresh` and `gpubox up --no-setup` against moto's server, and
count the Price List API requests each command makes (moto has no Price List API: each
one is a 500). Five runs each; prints the median. Run from the repository root:

    PYTHONPATH=$PWD/src:$PWD python benchmarks/price_list_moto.py
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    "GPUBOX_AWS_REGIONS": "us-east-1", "COLUMNS": "200",
}  # fmt: skip
RUNS = 5


def main() -> None:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication
    from moto.server import ThreadedMotoServer

    from tests.providers.aws.moto_seed import seed_images

    pricing = []
    call = DomainDispatcherApplication.__call__

    def counting(self, environ, start_response):
        if "AWSPriceListService" in environ.get("HTTP_X_AMZ_TARGET", ""):
            pricing.append(1)
        return call(self, environ, start_response)

    DomainDispatcherApplication.__call__ = counting
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    seed_images("us-east-1")
    home = tempfile.mkdtemp(prefix="gpubox-bench-")
    env = {**os.environ, **AWS_ENV, "AWS_ENDPOINT_URL": f"http://{host}:{port}",
           "GPUBOX_HOME": home}  # fmt: skip

    def timed(*args: str) -> tuple[float, int]:
        before = len(pricing)
        start = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "gpubox", *args], env=env,
                              capture_output=True, text=True, stdin=subprocess.DEVNULL)  # fmt: skip
        took = time.monotonic() - start
        if done.returncode != 0:
            sys.exit(f"gpubox {' '.join(args)} failed: {done.stderr}")
        return took, len(pricing) - before

    for label, commands in [
        ("up --no-setup", [("up", f"b{n}", "--type", "g4dn.xlarge", "--no-setup",
                            "--ssh-from", "203.0.113.7/32") for n in range(RUNS)]),
        ("status --refresh", [("status", "--refresh")] * RUNS),
    ]:  # fmt: skip
        runs = [timed(*args) for args in commands]
        times = sorted(t for t, _ in runs)
        print(f"{label}: median {statistics.median(times):.2f} s "
              f"(min {times[0]:.2f}, max {times[-1]:.2f}); "
              f"Price List requests per run: {[n for _, n in runs]}")  # fmt: skip
    server.stop()


if __name__ == "__main__":
    main()
