"""Fixtures for the multi-node tests: moto's server in this process (so the placement
group extension in moto_placement.py applies to it)."""

from __future__ import annotations

import pytest

from tests.cluster.moto_placement import placement_groups  # noqa: F401 - a fixture


@pytest.fixture(scope="module")
def moto_server():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
