"""Spot: prices and the max-price check; the interruption watcher run for real as a
subprocess against a local IMDSv2 endpoint.

The metadata endpoint is a hand-made fake (an HTTP server on 127.0.0.1 that speaks
the IMDSv2 token protocol): no real instance metadata service exists off EC2, and
moto has no spot/instance-action path.
"""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
from importlib import resources

import pytest

from gpubox.errors import InvalidInput
from gpubox.providers.aws import spot


def test_max_price_keeps_only_zones_within_it():
    prices = {"us-east-1a": 0.50, "us-east-1b": 0.40, "us-east-1c": 0.45}
    assert spot.check_max_price("g5.xlarge", 0.45, prices) == ["us-east-1b", "us-east-1c"]
    assert spot.check_max_price("g5.xlarge", None, prices) == list(prices)
    with pytest.raises(InvalidInput) as caught:
        spot.check_max_price("g5.xlarge", 0.1, prices)
    assert "$0.4000/h at the cheapest (us-east-1b)" in caught.value.message
    with pytest.raises(InvalidInput):
        spot.check_max_price("g5.xlarge", 0, prices)


def test_current_prices_are_the_latest_per_zone(aws):
    import boto3

    ec2 = boto3.client("ec2", region_name="us-east-1")
    prices = spot.current_prices(ec2, "g5.xlarge")
    assert prices and all(z.startswith("us-east-1") for z in prices)
    assert spot.cheapest({"a": 2.0, "b": 1.0}) == ("b", 1.0) and spot.cheapest({}) is None


def test_price_line_compares_with_on_demand():
    line = spot.price_line("g5.xlarge", 0.4024, 1.006)
    assert line == "g5.xlarge spot $0.4024/h against on-demand $1.0060/h (60% less)"


def test_market_options_are_accepted_by_run_instances(aws):
    import boto3

    ec2 = boto3.client("ec2", region_name="us-east-1")
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    options = spot.market_options(0.5)
    assert options["SpotOptions"] == {
        "SpotInstanceType": "persistent", "InstanceInterruptionBehavior": "stop",
        "MaxPrice": "0.50000",
    }  # fmt: skip
    made = ec2.run_instances(
        ImageId=image, MinCount=1, MaxCount=1, InstanceType="g5.xlarge",
        InstanceMarketOptions=options,
    )["Instances"][0]  # fmt: skip
    assert made["InstanceLifecycle"] == "spot"


def test_interruption_from_ec2_state_reason():
    stopped = {
        "InstanceLifecycle": "spot",
        "StateReason": {"Code": "Server.SpotInstanceShutdown", "Message": "..."},
    }
    found = spot.interruption_from_instance(stopped)
    assert found is not None and "gpubox start box1" in found.describe("box1")
    by_user = {"InstanceLifecycle": "spot", "StateReason": {"Code": "Client.UserInitiatedShutdown"}}
    assert spot.interruption_from_instance(by_user) is None


class FakeImds(http.server.BaseHTTPRequestHandler):
    """IMDSv2: PUT /latest/api/token, then GETs with the token; 401 without it."""

    notice: bytes | None = None
    tokens_issued = 0

    def do_PUT(self):
        if self.path != "/latest/api/token" or not self.headers.get(
            "X-aws-ec2-metadata-token-ttl-seconds"
        ):
            self.send_error(400)
            return
        type(self).tokens_issued += 1
        self._answer(200, b"token-abc")

    def do_GET(self):
        if self.headers.get("X-aws-ec2-metadata-token") != "token-abc":
            self._answer(401, b"")
        elif self.path == "/latest/meta-data/spot/instance-action" and self.notice:
            self._answer(200, self.notice)
        else:
            self._answer(404, b"Not Found")

    def _answer(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def imds():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeImds)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    FakeImds.notice = None
    yield server
    server.shutdown()
    server.server_close()


def run_watch(imds, home, *args):
    script = resources.files("gpubox").joinpath("remote/agent/spot_watch.py")
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin",
           "GPUBOX_IMDS_URL": f"http://127.0.0.1:{imds.server_address[1]}"}  # fmt: skip
    return subprocess.run(
        [sys.executable, str(script), "--once", *args], env=env, capture_output=True,
        text=True, timeout=30,
    )  # fmt: skip


def test_watcher_records_the_notice_and_status_reads_it(imds, tmp_path):
    from gpubox.remote.runner import LocalRunner

    home = tmp_path / "boxhome"
    home.mkdir()
    record = home / ".gpubox" / "state" / "spot-interruption.json"
    quiet = run_watch(imds, home)
    assert quiet.returncode == 1 and not record.exists()  # 404: no notice, nothing written

    FakeImds.notice = b'{"action": "stop", "time": "2025-03-01T10:02:00Z"}'
    marker = home / "hook-ran"
    noticed = run_watch(imds, home, "--on-notice", f"touch {marker}")
    assert noticed.returncode == 0, noticed.stderr
    assert marker.exists()
    found = spot.interruption_from_record(record.read_text())
    assert found is not None and found.action == "stop" and found.time == "2025-03-01T10:02:00Z"

    class HomeRunner(LocalRunner):  # the runner `status` would use, with the box's HOME
        def run(self, command, **kw):
            return super().run(f"HOME={home}; {command}", **kw)

    seen = spot.read_interruption(HomeRunner())
    assert seen == found
    assert "gpubox start box1" in seen.describe("box1")


def test_watcher_without_a_token_gets_nothing(imds, tmp_path):
    # The notice is there, but only for requests that carry a session token.
    FakeImds.notice = b'{"action": "terminate", "time": "2025-03-01T10:02:00Z"}'
    before = FakeImds.tokens_issued
    result = run_watch(imds, tmp_path)
    assert result.returncode == 0 and FakeImds.tokens_issued == before + 1
