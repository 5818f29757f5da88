"""Images from AWS's public SSM parameters, explicit ids, saved names; host keys from a console."""

from __future__ import annotations

import pytest

from gpubox.errors import InvalidInput, NotFound
from gpubox.providers.aws.images import parse_host_keys, resolve_image
from tests.providers.aws.moto_seed import CONSOLE_WITH_KEYS, HOST_KEYS, seed_images


def test_dlami_is_the_default_and_ubuntu_resolves_through_ssm(aws, settings):
    dlami = resolve_image(settings, "us-east-1", None, "x86_64")
    assert (dlami.id, dlami.source) == (aws["us-east-1"][("dlami", "x86_64")], "dlami")
    assert dlami.root_device_name == "/dev/sda1"
    arm = resolve_image(settings, "us-east-1", "ubuntu", "arm64")
    assert arm.id == aws["us-east-1"][("ubuntu", "arm64")] and arm.arch == "arm64"


def test_missing_ssm_parameter_is_not_found(aws, settings):
    with pytest.raises(NotFound, match="no dlami image"):
        resolve_image(settings, "ap-south-1", "dlami", "x86_64")


def test_explicit_ami_is_checked(aws, settings):
    ami = aws["us-east-1"][("ubuntu", "x86_64")]
    assert resolve_image(settings, "us-east-1", ami, "x86_64").source == "ami"
    with pytest.raises(InvalidInput, match="is for x86_64"):
        resolve_image(settings, "us-east-1", ami, "arm64")
    with pytest.raises(NotFound, match="does not exist in us-east-1"):
        resolve_image(settings, "us-east-1", "ami-00000000000000000", "x86_64")
    with pytest.raises(InvalidInput):
        resolve_image(settings, "us-east-1", "ami-xyz", "x86_64")


def test_saved_image_by_name_is_the_newest_tagged_one(aws, settings, ec2):
    source = ec2.run_instances(
        ImageId=aws["us-east-1"][("dlami", "x86_64")], MinCount=1, MaxCount=1,
        InstanceType="g4dn.xlarge",
    )["Instances"][0]["InstanceId"]
    made = ec2.create_image(
        InstanceId=source, Name="d2l-env-1",
        TagSpecifications=[{"ResourceType": "image",
                            "Tags": [{"Key": "gpubox:image", "Value": "d2l-env"}]}],
    )["ImageId"]
    found = resolve_image(settings, "us-east-1", "d2l-env", "x86_64")
    assert (found.id, found.source) == (made, "saved")
    with pytest.raises(NotFound) as caught:
        resolve_image(settings, "us-east-1", "d2l-envv", "x86_64")
    assert caught.value.hint == "did you mean 'd2l-env'?"
    with pytest.raises(NotFound) as caught:
        resolve_image(settings, "us-east-1", "zzz", "x86_64")
    assert "gpubox images" in caught.value.hint


def test_other_regions_have_their_own_images(aws, settings):
    west = seed_images("us-west-2")
    assert resolve_image(settings, "us-west-2", "dlami", "x86_64").id == west[("dlami", "x86_64")]


def test_host_keys_are_read_from_the_console_block():
    assert parse_host_keys(CONSOLE_WITH_KEYS) == HOST_KEYS
    assert parse_host_keys("no keys here\n") == ()
    broken = CONSOLE_WITH_KEYS.replace("-----END SSH HOST KEY KEYS-----", "")
    assert parse_host_keys(broken) == HOST_KEYS  # truncated console: what was printed
