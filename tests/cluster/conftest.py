"""Fixtures for the multi-node tests: moto's server in this process (so the placement
group extension in moto_placement.py applies to it), and a wiped world on it per test."""

from __future__ import annotations

import urllib.request

import pytest

from tests.cluster.moto_placement import placement_groups  # noqa: F401 - a fixture
from tests.providers.aws.moto_seed import seed_images


@pytest.fixture(scope="module")
def moto_server():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def endpoint(moto_server, placement_groups, isolation, monkeypatch):  # noqa: F811
    """A wiped moto world (placement groups from moto_placement.py), images seeded."""
    urllib.request.urlopen(urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST"))
    seed_images("us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    return moto_server
