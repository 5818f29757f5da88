"""GPU vCPU quotas: EC2 use from moto (real instances), Service Quotas through botocore's
Stubber (moto has no Service Quotas for ec2); every stubbed response is validated by the
Stubber against the real service model, and every request's parameters are checked."""

from __future__ import annotations

import datetime as dt

import pytest
from botocore.stub import Stubber

from gpubox.errors import InvalidInput, NotFound, QuotaExceeded
from gpubox.providers.aws import quotas

REGION = "us-east-1"


def quota_answer(code: str, value: float) -> dict:
    name = next(n for (c, n) in quotas.QUOTAS.values() if c == code)
    return {
        "Quota": {
            "ServiceCode": "ec2",
            "ServiceName": "Amazon Elastic Compute Cloud (Amazon EC2)",
            "QuotaArn": f"arn:aws:servicequotas:{REGION}:123456789012:ec2/{code}",
            "QuotaCode": code,
            "QuotaName": name,
            "Value": value,
            "Unit": "None",
            "Adjustable": True,
            "GlobalQuota": False,
        }
    }


def history_answer(code: str, *requests: tuple[str, float, str]) -> dict:
    return {
        "RequestedQuotas": [
            {
                "Id": rid,
                "ServiceCode": "ec2",
                "QuotaCode": code,
                "DesiredValue": desired,
                "Status": status,
                "Created": dt.datetime(2025, 1, 2 + i, tzinfo=dt.UTC),
                "Unit": "None",
            }
            for i, (rid, desired, status) in enumerate(requests)
        ]
    }


@pytest.fixture
def sq(aws):
    import boto3

    client = boto3.client("service-quotas", region_name=REGION)
    with Stubber(client) as stubber:
        client.stubber = stubber
        yield client
        stubber.assert_no_pending_responses()


def expect_quota(sq, code: str, value: float) -> None:
    sq.stubber.add_response(
        "get_service_quota", quota_answer(code, value), {"ServiceCode": "ec2", "QuotaCode": code}
    )


def expect_history(sq, code: str, *requests) -> None:
    sq.stubber.add_response(
        "list_requested_service_quota_change_history_by_quota",
        history_answer(code, *requests),
        {"ServiceCode": "ec2", "QuotaCode": code},
    )


def run_box(ec2, instance_type: str, spot: bool = False) -> None:
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    extra = {"InstanceMarketOptions": {"MarketType": "spot"}} if spot else {}
    ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, InstanceType=instance_type, **extra)


def instance_count(ec2) -> int:
    return sum(len(r["Instances"]) for r in ec2.describe_instances()["Reservations"])


@pytest.mark.parametrize(
    "instance_type, family",
    [("g4dn.xlarge", "G and VT"), ("g5.xlarge", "G and VT"), ("g6e.2xlarge", "G and VT"),
     ("vt1.3xlarge", "G and VT"), ("p3.2xlarge", "P"), ("p4d.24xlarge", "P"), ("p5.48xlarge", "P"),
     ("t3.micro", None), ("m5.large", None), ("gpu", None)],
)  # fmt: skip
def test_family_of(instance_type, family):
    assert quotas.family_of(instance_type) == family


def test_a_type_with_no_gpu_quota_is_refused_with_a_reason():
    with pytest.raises(InvalidInput, match="t3.micro is not a GPU type"):
        quotas.quota_for("t3.micro")


def test_check_room_passes_when_the_quota_holds_the_box(sq, ec2):
    run_box(ec2, "g5.xlarge")  # 4 vCPUs in use
    expect_quota(sq, "L-DB2E81BA", 8.0)
    quota = quotas.check_room(sq, ec2, "g5.xlarge", spot=False, region=REGION)
    assert (quota.used_vcpus, quota.free_vcpus, quota.room_for(4)) == (4, 4, 1)


def test_check_room_stops_with_the_numbers_and_the_command(sq, ec2):
    run_box(ec2, "g5.xlarge")
    run_box(ec2, "g5.2xlarge", spot=True)  # spot: counts against the spot quota, not this one
    expect_quota(sq, "L-DB2E81BA", 4.0)
    before = instance_count(ec2)
    with pytest.raises(QuotaExceeded) as caught:
        quotas.check_room(sq, ec2, "g5.xlarge", spot=False, region=REGION)
    error = caught.value
    assert "needs 4 vCPUs" in error.message and "L-DB2E81BA" in error.message
    assert "4 vCPUs with 4 in use: 0 free" in error.message
    assert "gpubox quota request --type g5.xlarge --region us-east-1" in error.hint
    assert instance_count(ec2) == before  # nothing created


def test_spot_quota_is_checked_the_same_way(sq, ec2):
    run_box(ec2, "p4d.24xlarge", spot=True)  # 96 vCPUs of P spot
    expect_quota(sq, "L-7212CCBC", 96.0)
    with pytest.raises(QuotaExceeded) as caught:
        quotas.check_room(sq, ec2, "p4d.24xlarge", spot=True, region=REGION)
    assert "All P Spot Instance Requests" in caught.value.message
    assert "--type p4d.24xlarge --spot" in caught.value.hint


@pytest.mark.parametrize(
    "instance_type, spot, count, code, desired",
    [("g5.xlarge", False, 2, "L-DB2E81BA", 12.0),  # 4 in use + 2 x 4
     ("g5.xlarge", True, 1, "L-3819A6DF", 4.0),
     ("p4d.24xlarge", False, 1, "L-417A185B", 96.0)],
)  # fmt: skip
def test_request_files_the_right_code_with_the_right_vcpus(
    sq, ec2, instance_type, spot, count, code, desired
):
    run_box(ec2, "g5.xlarge")
    expect_quota(sq, code, 0.0)
    expect_history(sq, code, ("old-1", 8.0, "DENIED"))
    sq.stubber.add_response(
        "request_service_quota_increase",
        {
            "RequestedQuota": {
                "Id": "req-123", "ServiceCode": "ec2", "QuotaCode": code,
                "DesiredValue": desired, "Status": "PENDING",
                "Created": dt.datetime(2025, 2, 1, tzinfo=dt.UTC),
            }
        },
        {"ServiceCode": "ec2", "QuotaCode": code, "DesiredValue": desired},
    )  # fmt: skip
    outcome = quotas.request_increase(sq, ec2, instance_type, count=count, spot=spot)
    assert outcome.filed is not None and outcome.filed.id == "req-123"
    assert outcome.desired_vcpus == desired


def test_request_files_nothing_when_there_is_room_or_an_open_request(sq, ec2):
    expect_quota(sq, "L-DB2E81BA", 16.0)
    expect_history(sq, "L-DB2E81BA")
    outcome = quotas.request_increase(sq, ec2, "g5.xlarge")
    assert outcome.filed is None and "already has room" in outcome.reason

    expect_quota(sq, "L-DB2E81BA", 0.0)
    expect_history(sq, "L-DB2E81BA", ("req-9", 8.0, "CASE_OPENED"))
    outcome = quotas.request_increase(sq, ec2, "g5.xlarge")
    assert outcome.filed is None and "req-9" in outcome.reason and "CASE_OPENED" in outcome.reason
    # The Stubber raises if request_service_quota_increase had been called: nothing queued.


def test_a_type_that_exists_nowhere_is_not_found(sq, ec2):
    with pytest.raises(NotFound, match="g9.xlarge"):
        quotas.request_increase(sq, ec2, "g9.xlarge")


def test_read_quotas_shows_use_and_the_pending_request(sq, ec2):
    run_box(ec2, "g5.2xlarge")  # 8 vCPUs on-demand G
    for code, value in [("L-DB2E81BA", 8.0), ("L-417A185B", 0.0), ("L-3819A6DF", 4.0),
                        ("L-7212CCBC", 0.0)]:  # fmt: skip
        expect_quota(sq, code, value)
        expect_history(sq, code, *([("req-1", 16.0, "PENDING")] if code == "L-DB2E81BA" else []))
    found = {q.code: q for q in quotas.read_quotas(sq, ec2)}
    g = found["L-DB2E81BA"]
    assert (g.limit_vcpus, g.used_vcpus, g.free_vcpus) == (8.0, 8, 0)
    assert g.pending is not None and g.pending.status == "PENDING" and g.pending.desired_vcpus == 16
    assert found["L-3819A6DF"].room_for(4) == 1 and found["L-417A185B"].pending is None


def test_no_such_resource_falls_back_to_the_aws_default(sq):
    code = "L-417A185B"
    sq.stubber.add_client_error(
        "get_service_quota", "NoSuchResourceException", "no applied value", 400,
        expected_params={"ServiceCode": "ec2", "QuotaCode": code},
    )  # fmt: skip
    sq.stubber.add_response(
        "get_aws_default_service_quota", quota_answer(code, 0.0),
        {"ServiceCode": "ec2", "QuotaCode": code},
    )  # fmt: skip
    assert quotas.quota_value(sq, code) == 0.0
