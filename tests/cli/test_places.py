"""`gpubox regions`, `gpubox quota`, `gpubox quota request`, run in-process on moto.

Latency goes to 127.0.0.1 only (the isolation fixture's latency_endpoint); Service
Quotas through botocore's Stubber on the same cached client the command uses.
"""

from __future__ import annotations

import json

import pytest
from botocore.stub import Stubber

from gpubox import config
from gpubox.cli.main import run
from gpubox.providers.aws import session


@pytest.fixture
def aws(isolation, monkeypatch):
    from moto import mock_aws

    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)  # moto in-process, not a server
    with mock_aws():
        yield


def gpubox(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        run(list(argv))
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    out, err = capsys.readouterr()
    return code, out, err


def test_regions_json_lists_enabled_and_not_enabled_and_marks_the_pick(aws, capsys):
    code, out, _ = gpubox(capsys, "regions", "--json")
    assert code == 0
    rows = json.loads(out)
    assert [r["name"] for r in rows if r["best"]] and sum(r["best"] for r in rows) == 1
    off = [r for r in rows if not r["enabled"]]
    assert off and all(not r["best"] and r["latency_ms"] is None for r in off)


def test_regions_with_a_type_that_exists_nowhere_says_so(aws, capsys):
    code, out, err = gpubox(capsys, "regions", "--type", "g9.xlarge")
    assert code == 0 and "not offered in any region" in err


def test_quota_region_typo_is_one_red_line_with_a_suggestion(aws, capsys):
    code, _, err = gpubox(capsys, "quota", "--region", "us-wset-2")
    assert code == 1
    assert "there is no AWS region called 'us-wset-2'" in err and "us-west-2" in err


def test_quota_request_for_a_type_with_no_gpu_quota(aws, capsys):
    code, _, err = gpubox(capsys, "quota", "request", "--type", "t3.micro")
    assert code == 2 and "t3.micro is not a GPU type" in err


def test_quota_shows_room_in_boxes_and_the_pending_request(aws, capsys, monkeypatch):
    from rich.console import Console

    from gpubox.cli import render

    monkeypatch.setattr(render, "_console", Console(width=200, highlight=False))  # no wrapping
    sq = session.client(
        config.load().with_overrides(region="us-east-1"), "service-quotas", "us-east-1"
    )
    with Stubber(sq) as stub:
        for code, value in [("L-DB2E81BA", 8.0), ("L-417A185B", 0.0), ("L-3819A6DF", 4.0),
                            ("L-7212CCBC", 0.0)]:  # fmt: skip
            stub.add_response(
                "get_service_quota", {"Quota": {"QuotaCode": code, "Value": value}},
                {"ServiceCode": "ec2", "QuotaCode": code},
            )  # fmt: skip
            pending = [{"Id": "req-7", "QuotaCode": code, "DesiredValue": 16.0,
                        "Status": "PENDING"}] if code == "L-DB2E81BA" else []  # fmt: skip
            stub.add_response(
                "list_requested_service_quota_change_history_by_quota",
                {"RequestedQuotas": pending}, {"ServiceCode": "ec2", "QuotaCode": code},
            )  # fmt: skip
        code, out, err = gpubox(capsys, "quota", "--region", "us-east-1")
    assert code == 0, err
    assert "room for 2 more g5.xlarge" in out and "16 vCPUs PENDING" in out
    assert "no room for a p3.2xlarge" in out
