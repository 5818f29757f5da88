"""A launch that cannot succeed says why, suggests the fix, and leaves nothing behind."""

from __future__ import annotations

import pytest

from gpubox.errors import CapacityError, CredentialsError, NotFound, QuotaExceeded
from gpubox.providers.base import BoxSpec


def spec(**kw) -> BoxSpec:
    values = {"type": "g4dn.xlarge", "ssh_from": "203.0.113.7/32"}
    values.update(kw)
    return BoxSpec(name="box1", provider="aws", **values)


def assert_nothing_left(ec2, settings):
    groups = ec2.describe_security_groups()["SecurityGroups"]
    assert [g["GroupName"] for g in groups if g["GroupName"] != "default"] == []
    assert ec2.describe_key_pairs()["KeyPairs"] == []
    live = [
        i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]
        if i["State"]["Name"] != "terminated"
    ]
    assert live == []
    assert not (settings.keys_dir / "box1.pem").exists()


def test_unknown_type_suggests_the_close_one(provider, ec2, settings):
    with pytest.raises(NotFound) as caught:
        provider.launch(spec(type="g4dn.xlarg"))
    assert "g4dn.xlarg" in caught.value.message
    assert caught.value.hint == "did you mean 'g4dn.xlarge'?"
    assert_nothing_left(ec2, settings)


def test_type_not_offered_in_the_region_lists_where_it_is(provider, ec2, settings):
    with pytest.raises(NotFound) as caught:
        provider.launch(spec(type="g6.xlarge", region="eu-west-1"))
    assert caught.value.message == "g6.xlarge is not offered in eu-west-1"
    assert "us-east-1 (" in caught.value.hint and "--region" in caught.value.hint
    assert "eu-west-1" not in caught.value.hint


def test_missing_image_is_not_found_and_nothing_is_made(provider, ec2, settings):
    with pytest.raises(NotFound, match="ami-0123456789abcdef0"):
        provider.launch(spec(image="ami-0123456789abcdef0"))
    with pytest.raises(NotFound, match="no image called 'my-env'"):
        provider.launch(spec(image="my-env"))
    assert_nothing_left(ec2, settings)


@pytest.mark.parametrize(
    ("code", "error"),
    [
        ("InsufficientInstanceCapacity", CapacityError),
        ("VcpuLimitExceeded", QuotaExceeded),
        ("MaxSpotInstanceCountExceeded", QuotaExceeded),
    ],
)
def test_refused_launch_raises_its_error_and_removes_what_it_made(
    provider, ec2, settings, monkeypatch, code, error
):
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.models import EC2Backend

    def refuse(self, *args, **kwargs):
        raise EC2ClientError(code, "We currently do not have sufficient capacity (test).")

    monkeypatch.setattr(EC2Backend, "run_instances", refuse)
    with pytest.raises(error) as caught:
        provider.launch(spec())
    assert f"AWS {code}" in caught.value.message
    assert_nothing_left(ec2, settings)


def test_capacity_error_sent_as_http_500_is_not_retried_by_botocore(
    provider, ec2, settings, monkeypatch
):
    """Real AWS sends InsufficientInstanceCapacity with HTTP 500; botocore's standard mode
    would retry a 500 by itself. The launch client must ask once and report at once.
    The 500 is injected as AWS's own XML body on the launch client's before-send hook
    (moto cannot send a 500 for it); moto's backend refuses too, so it makes nothing."""
    from botocore.awsrequest import AWSResponse
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.models import EC2Backend

    def refuse(self, *args, **kwargs):
        raise EC2ClientError("InsufficientInstanceCapacity", "no capacity (test)")

    monkeypatch.setattr(EC2Backend, "run_instances", refuse)

    from gpubox.providers.aws.session import client

    body = (
        b'<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error>'
        b"<Code>InsufficientInstanceCapacity</Code><Message>We currently do not have "
        b"sufficient g4dn.xlarge capacity in the Availability Zone you requested."
        b"</Message></Error></Errors><RequestID>r-1</RequestID></Response>"
    )
    sent = []

    class Raw:
        def stream(self, **_):
            yield body

    def answer_500(request, **_):
        sent.append(request.url)
        return AWSResponse(request.url, 500, {}, Raw())

    launch_client = client(settings, "ec2", "us-east-1", purpose="launch")
    launch_client.meta.events.register_first("before-send.ec2.RunInstances", answer_500)
    with pytest.raises(CapacityError, match="InsufficientInstanceCapacity"):
        provider.launch(spec())
    assert len(sent) == 1
    assert_nothing_left(ec2, settings)


def test_no_credentials_is_a_credentials_error(aws, settings, monkeypatch):
    from gpubox.providers.aws import AwsProvider

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(CredentialsError) as caught:
        AwsProvider(settings).list()
    assert "aws configure" in caught.value.hint


def test_a_failed_launch_keeps_the_key_it_found_and_removes_the_group_it_made(
    provider, ec2, settings, monkeypatch
):
    import subprocess

    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.models import EC2Backend

    path = settings.keys_dir / "box1.pem"
    settings.keys_dir.mkdir(parents=True, mode=0o700)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    public = (settings.keys_dir / "box1.pem.pub").read_bytes()
    ec2.import_key_pair(KeyName="gpubox-box1", PublicKeyMaterial=public)

    def refuse(self, *args, **kwargs):
        raise EC2ClientError("InsufficientInstanceCapacity", "no capacity (test)")

    monkeypatch.setattr(EC2Backend, "run_instances", refuse)
    with pytest.raises(CapacityError):
        provider.launch(spec())
    assert [k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]] == ["gpubox-box1"]
    assert path.exists()
    groups = ec2.describe_security_groups()["SecurityGroups"]
    assert [g["GroupName"] for g in groups if g["GroupName"] != "default"] == []


def test_spot_launch_asks_for_a_persistent_request_that_stops(provider, settings):
    """moto ignores SpotOptions, so read what RunInstances was sent, as AWS would get it."""
    from gpubox.providers.aws.session import client

    sent = []
    launch_client = client(settings, "ec2", "us-east-1", purpose="launch")
    launch_client.meta.events.register(
        "provide-client-params.ec2.RunInstances", lambda params, **_: sent.append(dict(params))
    )
    provider.launch(spec(spot=True, max_price=0.25))
    (params,) = sent
    assert params["InstanceMarketOptions"] == {
        "MarketType": "spot",
        "SpotOptions": {
            "SpotInstanceType": "persistent",
            "InstanceInterruptionBehavior": "stop",
            "MaxPrice": "0.25000",
        },
    }
    assert params["ClientToken"].startswith("gpubox-box1-")
    assert params["InstanceInitiatedShutdownBehavior"] == "stop"
