"""Latency from here to each AWS region: measured, not guessed.

A few TCP connects plus TLS handshakes to each region's EC2 endpoint
(`settings.latency_endpoint`), in parallel, median per region. The result is
cached in the State for a few minutes so `up` does not measure again each time.

`settings.latency_endpoint` is one of:
  - a template with `{region}`: `ec2.{region}.amazonaws.com:443` (the default);
  - explicit endpoints per region, for a proxy, VPC interface endpoints or a test:
    `us-east-1=vpce-1.ec2.us-east-1.vpce.amazonaws.com:443, *=proxy.lan:443`.
    Regions not listed, when there is no `*=` entry, are not measured.
Either form may start with `tcp://` to time the TCP connect only (a plain TCP
forwarder that does not speak TLS); `tls://` or nothing times connect + handshake.
"""

from __future__ import annotations

import json
import socket
import ssl
import statistics
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from gpubox.config import Settings
from gpubox.errors import InvalidInput

CACHE_KEY = "aws.latency"
TTL_SECONDS = 300
TRIES = 3
CONNECT_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    tls: bool = True

    def __str__(self) -> str:
        return f"{'tls' if self.tls else 'tcp'}://{self.host}:{self.port}"


def _parse_address(text: str, region: str) -> Endpoint:
    tls = True
    if "://" in text:
        scheme, text = text.split("://", 1)
        if scheme not in ("tls", "tcp"):
            raise InvalidInput(
                f"latency_endpoint has an unknown scheme '{scheme}://'",
                hint="use tls:// (the default) or tcp://",
            )
        tls = scheme == "tls"
    text = text.replace("{region}", region)
    host, _, port = text.rpartition(":")
    if not host:
        host, port = text, "443"
    try:
        return Endpoint(host.strip("[]"), int(port), tls)
    except ValueError:
        raise InvalidInput(
            f"latency_endpoint has a bad port in '{text}'",
            hint="write host:port, e.g. ec2.{region}.amazonaws.com:443",
        ) from None


def endpoint_for(setting: str, region: str) -> Endpoint | None:
    """Where to measure `region`'s latency, per `settings.latency_endpoint`; None: not measured."""
    scheme = ""
    if setting.startswith(("tls://", "tcp://")):
        scheme, setting = setting[:6], setting[6:]
    if "=" not in setting:
        return _parse_address(scheme + setting, region)
    entries: dict[str, str] = {}
    for item in setting.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            raise InvalidInput(
                f"latency_endpoint entry '{item.strip()}' is not REGION=HOST:PORT",
                hint="e.g. us-east-1=127.0.0.1:8443, *=proxy.lan:443",
            )
        entries[key.strip()] = value.strip()
    chosen = entries.get(region, entries.get("*"))
    return None if chosen is None else _parse_address(scheme + chosen, region)


def _handshake_ms(
    address: tuple[Any, ...], family: int, endpoint: Endpoint, timeout: float
) -> float:
    # Certificates are not checked: nothing is sent or trusted, only the time is kept.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    start = time.perf_counter()
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(address)
        if endpoint.tls:
            with context.wrap_socket(sock, server_hostname=endpoint.host):
                pass
    return (time.perf_counter() - start) * 1000.0


def measure_one(
    endpoint: Endpoint, tries: int = TRIES, timeout: float = CONNECT_TIMEOUT_SECONDS
) -> float | None:
    """Median milliseconds of `tries` connects (+ handshakes); None when none succeeded."""
    try:
        # Resolve once, outside the timing: DNS is not distance.
        family, _, _, _, address = socket.getaddrinfo(
            endpoint.host, endpoint.port, type=socket.SOCK_STREAM
        )[0]
    except OSError:
        return None
    samples: list[float] = []
    for _ in range(tries):
        try:
            samples.append(_handshake_ms(address, family, endpoint, timeout))
        except (OSError, ssl.SSLError):
            continue
    return statistics.median(samples) if samples else None


def measure_latencies(
    endpoints: Mapping[str, Endpoint | None],
    tries: int = TRIES,
    timeout: float = CONNECT_TIMEOUT_SECONDS,
) -> dict[str, float | None]:
    """Latency of every region at once, in parallel; None for unreachable or unmeasured."""
    targets = {r: e for r, e in endpoints.items() if e is not None}
    result: dict[str, float | None] = {r: None for r in endpoints}
    if not targets:
        return result
    with ThreadPoolExecutor(max_workers=min(32, len(targets))) as pool:
        futures = {r: pool.submit(measure_one, e, tries, timeout) for r, e in targets.items()}
        for region, future in futures.items():
            result[region] = future.result()
    return result


def latencies(
    settings: Settings,
    state: Any,
    regions: Iterable[str],
    *,
    clock: Callable[[], float] = time.time,
    refresh: bool = False,
) -> dict[str, float | None]:
    """Latency per region, from the State's cache when it is fresh and covers them all."""
    wanted = sorted(set(regions))
    if not refresh:
        found = cached(state, settings.latency_endpoint, clock())
        if found is not None and all(r in found for r in wanted):
            return {r: found[r] for r in wanted}
    measured = measure_latencies({r: endpoint_for(settings.latency_endpoint, r) for r in wanted})
    state.put(
        CACHE_KEY,
        json.dumps({"endpoint": settings.latency_endpoint, "at": clock(), "ms": measured}),
    )
    return measured


def cached(state: Any, endpoint_setting: str, now: float) -> dict[str, float | None] | None:
    raw = state.get(CACHE_KEY)
    if not raw:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if data.get("endpoint") != endpoint_setting or not 0 <= now - data.get("at", 0) < TTL_SECONDS:
        return None
    return data.get("ms")
