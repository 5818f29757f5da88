"""moto in-process for the AWS provider's tests, with images and SSM parameters seeded."""

from __future__ import annotations

import pytest

from tests.providers.aws.moto_seed import seed_images


@pytest.fixture
def aws(isolation, monkeypatch):
    """A fresh moto world whose us-east-1 has dlami and ubuntu images (other regions:
    call seed_images(region); each region's moto backend costs about a second)."""
    from moto import mock_aws

    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)  # moto in-process, not a server
    with mock_aws():
        yield {"us-east-1": seed_images("us-east-1")}


@pytest.fixture
def provider(aws, settings):
    """An AwsProvider that records its progress messages and does not pause between polls.

    Its region is the plain one (spec, settings, boto3, us-east-1), which also makes
    `_launch` one launch attempt: these tests are of the provider, not of failover."""
    from gpubox.providers.aws import AwsProvider

    messages: list[str] = []
    prov = AwsProvider(settings, on_progress=messages.append, region_chooser=plain_region)
    prov.wait_delay = 0.01
    prov.messages = messages
    yield prov
    prov.state.close()


def plain_region(settings, spec):
    from gpubox.providers.aws.session import default_region

    return spec.region or default_region(settings)


@pytest.fixture
def ec2(aws):
    import boto3

    return boto3.client("ec2", region_name="us-east-1")
