"""The Price List API, which moto's server lacks (every request is a 500): a command asks
it at most once, then says the bundled dated snapshot's prices, marked approximate,
without a word about the failure. The real `gpubox` command against moto's server."""

from __future__ import annotations

import json

import pytest

from tests.cli.test_aws_subprocess import SSH_FROM, endpoint, gpubox  # noqa: F401


@pytest.fixture
def price_list_requests(monkeypatch):
    """Price List requests reaching moto's server (it runs in this process)."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    seen: list[str] = []
    call = DomainDispatcherApplication.__call__

    def counting(self, environ, start_response):
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if target.startswith("AWSPriceListService"):
            seen.append(target)
        return call(self, environ, start_response)

    monkeypatch.setattr(DomainDispatcherApplication, "__call__", counting)
    return seen


def test_a_failing_price_list_is_asked_once_per_command(endpoint, price_list_requests):  # noqa: F811
    up = gpubox("up", "box1", "--type", "g4dn.xlarge", "--no-setup", "--ssh-from", SSH_FROM)
    assert up.returncode == 0, up.stderr
    assert len(price_list_requests) <= 1, price_list_requests  # before: 2 (a retry of a 500)
    price_list_requests.clear()
    status = gpubox("status", "--refresh", "--json")
    assert status.returncode == 0, status.stderr
    assert len(price_list_requests) == 1, price_list_requests
    (box,) = json.loads(status.stdout)
    assert box["price_per_hour"] > 0.5  # the snapshot's g4dn.xlarge price
    assert "pricing" not in status.stderr.lower() and "price list" not in status.stderr.lower()
