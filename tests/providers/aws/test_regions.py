"""Regions: latency measured against real local TLS listeners with a known added delay
(never a real AWS host), and region choice against moto's EC2 regions and offerings."""

from __future__ import annotations

import dataclasses
import socket
import ssl
import subprocess
import threading

import pytest

from gpubox.errors import InvalidInput, NotFound
from gpubox.providers.aws import latency, regions


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cert")
    key, crt = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-subj", "/CN=localhost", "-days", "1", "-keyout", str(key), "-out", str(crt)],
        check=True, capture_output=True,
    )  # fmt: skip
    return crt, key


class TlsListener:
    """A real TLS server on 127.0.0.1 that waits `delay` seconds before each handshake."""

    def __init__(self, cert, delay: float, tls: bool = True, answer: bool = True) -> None:
        self.delay, self.tls, self.answer = delay, tls, answer
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(*cert)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.stopped = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            if not self.answer:  # accepts TCP, never says a word: a black hole
                self.stopped.wait(5)
                return
            self.stopped.wait(self.delay)
            if self.tls:
                try:
                    with self.context.wrap_socket(conn, server_side=True):
                        pass
                except (OSError, ssl.SSLError):
                    pass

    def close(self) -> None:
        self.stopped.set()
        self.sock.close()


@pytest.fixture(scope="module")
def listeners(cert):
    made = {
        "us-east-1": TlsListener(cert, 0.20),
        "us-west-2": TlsListener(cert, 0.0),
        "eu-west-1": TlsListener(cert, 0.08),
    }
    yield made
    for listener in made.values():
        listener.close()


def mapping(listeners) -> str:
    return ", ".join(f"{r}=127.0.0.1:{lst.port}" for r, lst in listeners.items())


def test_endpoint_setting_forms():
    assert latency.endpoint_for("ec2.{region}.amazonaws.com:443", "eu-west-1") == latency.Endpoint(
        "ec2.eu-west-1.amazonaws.com", 443
    )
    setting = "us-east-1=127.0.0.1:9001, *=127.0.0.1:9002"
    assert latency.endpoint_for(setting, "us-east-1").port == 9001
    assert latency.endpoint_for(setting, "sa-east-1").port == 9002
    assert latency.endpoint_for("us-east-1=127.0.0.1:9001", "sa-east-1") is None
    assert latency.endpoint_for("tcp://127.0.0.1:22", "x").tls is False
    with pytest.raises(InvalidInput):
        latency.endpoint_for("us-east-1=127.0.0.1:http", "us-east-1")
    with pytest.raises(InvalidInput):
        latency.endpoint_for("udp://127.0.0.1:53", "us-east-1")


def test_latency_ranks_regions_by_their_added_delay(listeners):
    measured = latency.measure_latencies(
        {r: latency.endpoint_for(mapping(listeners), r) for r in listeners}
    )
    assert sorted(measured, key=lambda r: measured[r]) == ["us-west-2", "eu-west-1", "us-east-1"]
    # A handshake cannot finish before the server's added delay has passed.
    assert measured["us-east-1"] >= 200 and measured["eu-west-1"] >= 80


def test_unreachable_and_silent_endpoints_are_none(cert):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    silent = TlsListener(cert, 0.0, answer=False)
    try:
        measured = latency.measure_latencies(
            {
                "closed": latency.Endpoint("127.0.0.1", port),
                "silent": latency.Endpoint("127.0.0.1", silent.port),
                "unmeasured": None,
            },
            timeout=0.3,
        )
    finally:
        silent.close()
    assert measured == {"closed": None, "silent": None, "unmeasured": None}


def test_tcp_scheme_times_a_plain_tcp_forwarder(cert):
    plain = TlsListener(cert, 0.0, tls=False)
    try:
        tcp = latency.measure_one(latency.Endpoint("127.0.0.1", plain.port, tls=False))
        tls = latency.measure_one(latency.Endpoint("127.0.0.1", plain.port, tls=True), timeout=0.5)
    finally:
        plain.close()
    assert tcp is not None  # the connect alone works
    assert tls is None  # it does not speak TLS: no handshake, no number


def test_latency_is_cached_for_a_few_minutes(listeners, settings):
    from gpubox.state import State

    settings = dataclasses.replace(settings, latency_endpoint=mapping(listeners))
    state = State(settings.state_path)
    now = [1000.0]
    before = listeners["us-west-2"].connections
    first = latency.latencies(settings, state, ["us-west-2"], clock=lambda: now[0])
    after_first = listeners["us-west-2"].connections
    now[0] += 60
    again = latency.latencies(settings, state, ["us-west-2"], clock=lambda: now[0])
    assert again == first and listeners["us-west-2"].connections == after_first > before
    now[0] += latency.TTL_SECONDS
    latency.latencies(settings, state, ["us-west-2"], clock=lambda: now[0])
    assert listeners["us-west-2"].connections > after_first
    state.close()


# ---- against moto -----------------------------------------------------------------


@pytest.fixture
def ec2_for(aws):
    import boto3

    made = {}

    def get(region):
        if region not in made:
            made[region] = boto3.client("ec2", region_name=region)
        return made[region]

    return get


@pytest.fixture
def near_settings(settings, listeners):
    # eu-west-1 and us-west-2 are measured; every other region is unmeasured (ranked last).
    return dataclasses.replace(settings, latency_endpoint=mapping(listeners))


@pytest.fixture
def state(settings):
    from gpubox.state import State

    s = State(settings.state_path)
    yield s
    s.close()


def test_up_picks_the_nearest_region_that_offers_the_type(near_settings, state, ec2_for):
    assert regions.choose_region(near_settings, state, "g5.xlarge", ec2_for).region == "us-west-2"
    # g6 is not offered in eu-west-1 (moto's offerings, as on AWS in places): skipped.
    slow_west = dataclasses.replace(
        near_settings,
        latency_endpoint=near_settings.latency_endpoint.replace("us-west-2=", "xx-none-1="),
    )
    choice = regions.choose_region(slow_west, state, "g6.xlarge", ec2_for)
    assert choice.region == "us-east-1"
    assert choice.zones and all(z.startswith("us-east-1") for z in choice.zones)


def test_a_configured_region_is_checked_not_replaced(near_settings, state, ec2_for):
    here = dataclasses.replace(near_settings, region="eu-west-1")
    assert regions.choose_region(here, state, "g5.xlarge", ec2_for).region == "eu-west-1"
    with pytest.raises(NotFound, match="g6.xlarge is not offered in eu-west-1"):
        regions.choose_region(here, state, "g6.xlarge", ec2_for)


def test_a_region_typo_gets_a_suggestion(near_settings, state, ec2_for):
    typo = dataclasses.replace(near_settings, region="us-wset-2")
    with pytest.raises(NotFound) as caught:
        regions.choose_region(typo, state, "g5.xlarge", ec2_for)
    assert "us-wset-2" in caught.value.message and "us-west-2" in caught.value.hint


def test_a_region_not_enabled_is_listed_but_never_chosen(near_settings, state, ec2_for):
    all_regions = regions.list_regions(ec2_for("us-east-1"))
    off = [r.name for r in all_regions if not r.enabled]
    assert off  # moto lists opt-in regions as not-opted-in
    with pytest.raises(regions.RegionNotEnabled, match="not enabled"):
        regions.choose_region(
            dataclasses.replace(near_settings, region=off[0]), state, "g5.xlarge", ec2_for
        )
    rows = regions.region_table(near_settings, state, ec2_for)
    names = [r.name for r in rows]
    assert off[0] in names and not next(r for r in rows if r.name == off[0]).best
    assert [r.name for r in rows if r.best] == ["us-west-2"]


def test_region_table_with_a_type_marks_the_region_up_would_pick(near_settings, state, ec2_for):
    rows = regions.region_table(
        near_settings, state, ec2_for, instance_type="g6.xlarge",
        on_demand_price=lambda region, t: 0.805,
    )  # fmt: skip
    by_name = {r.name: r for r in rows}
    assert by_name["eu-west-1"].zones == ()
    best = [r.name for r in rows if r.best]
    assert best == [regions.choose_region(near_settings, state, "g6.xlarge", ec2_for).region]
    assert by_name["us-west-2"].on_demand == 0.805 and by_name["us-west-2"].spot is not None
    # Nearest first: the measured ones lead, in order of their delay.
    assert [r.name for r in rows[:3]] == ["us-west-2", "eu-west-1", "us-east-1"]


def test_with_no_latency_and_no_region_configured_up_uses_us_east_1_and_says_why(
    settings, state, ec2_for, monkeypatch
):
    monkeypatch.delenv("AWS_DEFAULT_REGION")  # no region anywhere in the AWS configuration
    blocked = dataclasses.replace(settings, latency_endpoint="tcp://127.0.0.1:9")  # no answer
    choice = regions.choose_region(blocked, state, "g5.xlarge", ec2_for)
    assert choice.region == "us-east-1" and choice.latency_ms is None
    assert "could not be measured" in choice.why and "us-east-1" in choice.why
    assert choice.alternatives[0] != "us-east-1"
    rows = regions.region_table(blocked, state, ec2_for)
    assert [r.name for r in rows if r.best] == ["us-east-1"]


def test_with_no_latency_the_aws_configuration_region_comes_first(
    settings, state, ec2_for, monkeypatch
):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    blocked = dataclasses.replace(settings, latency_endpoint="tcp://127.0.0.1:9")
    choice = regions.choose_region(blocked, state, "g5.xlarge", ec2_for)
    assert choice.region == "eu-west-1" and "AWS configuration" in choice.why


def test_a_measured_region_still_wins_over_the_fallback(near_settings, state, ec2_for):
    choice = regions.choose_region(near_settings, state, "g5.xlarge", ec2_for)
    assert choice.region == "us-west-2" and "ms from here" in choice.why
