"""moto in-process for the AWS provider's tests, with images and SSM parameters seeded."""

from __future__ import annotations

import pytest

from tests.providers.aws.moto_seed import seed_images


@pytest.fixture
def aws(isolation):
    """A fresh moto world; us-east-1, us-west-2 and eu-west-1 have dlami and ubuntu images."""
    from moto import mock_aws

    with mock_aws():
        images = {r: seed_images(r) for r in ("us-east-1", "us-west-2", "eu-west-1")}
        yield images


@pytest.fixture
def provider(aws, settings):
    """An AwsProvider that records its progress messages and does not pause between polls."""
    from gpubox.providers.aws import AwsProvider

    messages: list[str] = []
    prov = AwsProvider(settings, on_progress=messages.append)
    prov.wait_delay = 0.01
    prov.messages = messages
    yield prov
    prov.state.close()


@pytest.fixture
def ec2(aws):
    import boto3

    return boto3.client("ec2", region_name="us-east-1")
