"""Fixtures for tests that run the real `gpubox` command as a subprocess."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def moto_server():
    """moto as a server on 127.0.0.1, for the `gpubox` command run as a subprocess."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
