"""A key pair whose private key was never stored (an interrupted `up`): when gpubox may
replace it, and when it must say so and leave it alone. moto in-process."""

from __future__ import annotations

import pytest

from gpubox.errors import GpuboxError
from gpubox.providers.aws import keypairs

OWNER = "arn:aws:iam::123456789012:user/test"


def key_pair(ec2, client: str | None, box: str = "box1") -> str:
    tags = [{"Key": "gpubox:box", "Value": box}]
    if client:
        tags.append({"Key": "gpubox:client", "Value": client})
    made = ec2.create_key_pair(KeyName=f"gpubox-{box}", KeyType="ed25519",
                               TagSpecifications=[{"ResourceType": "key-pair", "Tags": tags}])  # fmt: skip
    return made["KeyPairId"]


def test_our_own_key_pair_without_its_private_key_is_made_again(ec2, settings):
    old = key_pair(ec2, keypairs.client_id(settings))
    made = keypairs.ensure_key_pair(settings, "us-east-1", "box1", OWNER)
    assert made.created_on_aws and made.created_file and made.path.exists()
    (pair,) = ec2.describe_key_pairs()["KeyPairs"]
    assert pair["KeyPairId"] != old


@pytest.mark.parametrize("client", [None, "another-laptop"])
def test_a_key_pair_made_elsewhere_just_now_is_left_alone(ec2, settings, client):
    # untagged by client (older gpubox) or another machine's `up` in progress
    old = key_pair(ec2, client)
    with pytest.raises(GpuboxError, match="private key .* is missing"):
        keypairs.ensure_key_pair(settings, "us-east-1", "box1", OWNER)
    assert [p["KeyPairId"] for p in ec2.describe_key_pairs()["KeyPairs"]] == [old]


def test_a_key_pair_not_tagged_for_this_box_is_never_replaced(ec2, settings):
    ec2.create_key_pair(KeyName="gpubox-box1")  # someone else's, by name only
    with pytest.raises(GpuboxError, match="private key .* is missing"):
        keypairs.ensure_key_pair(settings, "us-east-1", "box1", OWNER)
    assert len(ec2.describe_key_pairs()["KeyPairs"]) == 1


def test_down_keeps_a_key_file_when_nothing_shows_its_box_is_gone(aws, settings):
    # e.g. the box lives in a region this gpubox does not know of: its key must stay
    from gpubox import leftovers
    from gpubox.localfiles import write_private
    from gpubox.state import State

    path = keypairs.key_path(settings, "box1")
    write_private(path, "-----BEGIN OPENSSH PRIVATE KEY-----\n")
    state = State(settings.state_path)
    said: list[str] = []
    assert leftovers.remove(settings, state, "box1", said.append) == []
    assert path.exists() and any("kept" in s for s in said)


def test_gc_keeps_the_key_file_while_another_region_still_has_the_key_pair(aws, settings):
    import boto3

    from gpubox.providers.aws import gc
    from gpubox.providers.aws.session import remember_region
    from gpubox.state import State

    made = keypairs.ensure_key_pair(settings, "us-east-1", "box1", OWNER)
    keypairs.ensure_key_pair(settings, "us-west-2", "box1", OWNER)  # imports the same key
    state = State(settings.state_path)
    remember_region(state, "us-east-1")
    remember_region(state, "us-west-2")
    state.close()
    plan = gc.find_garbage(settings, ["us-east-1"])
    gc.collect(settings, plan)
    assert boto3.client("ec2", region_name="us-east-1").describe_key_pairs()["KeyPairs"] == []
    assert made.path.exists()  # us-west-2's key pair still needs it
    gc.collect(settings, gc.find_garbage(settings, ["us-west-2"]))
    assert not made.path.exists()
