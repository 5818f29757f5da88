"""Which regions gpubox asks about its boxes, and that a laptop with no local record
still finds them: moto in-process, real boto3, requests counted with botocore's events."""

from __future__ import annotations

import dataclasses

import pytest

from gpubox.errors import GpuboxError
from gpubox.providers.aws import inventory, session
from gpubox.providers.base import BoxSpec, BoxState
from gpubox.state import State
from tests.providers.aws.conftest import plain_region

SSH_FROM = "203.0.113.7/32"


def count_calls(settings) -> list[tuple[str, str]]:
    """(operation, region) of every AWS request made through gpubox's session from now."""
    calls: list[tuple[str, str]] = []

    def before(model, context=None, **_):
        calls.append((model.name, (context or {}).get("client_region", "")))

    session.aws_session(settings).boto().events.register("before-call", before)
    return calls


def test_without_the_setting_every_enabled_region_is_searched_and_the_list_is_kept(
    aws, settings, monkeypatch
):
    monkeypatch.delenv("GPUBOX_AWS_REGIONS")
    unset = dataclasses.replace(settings, aws_regions=None)
    state = State(settings.state_path)
    calls = count_calls(unset)
    regions = inventory.search_regions(unset, state)
    assert "us-east-1" in regions and "eu-west-1" in regions and "ap-south-1" in regions
    assert "ap-east-1" not in regions and "me-south-1" not in regions  # not opted in
    assert len(regions) == 24
    assert [c[0] for c in calls] == ["DescribeRegions"]
    assert inventory.search_regions(unset, state) == regions
    assert [c[0] for c in calls] == ["DescribeRegions"]  # a day's cache in the state
    state.close()


@pytest.mark.parametrize("written", ['"eu-west-1, us-west-2"', '["eu-west-1", "us-west-2"]'])
def test_the_aws_regions_setting_narrows_the_search(aws, isolation, monkeypatch, written):
    from gpubox import config

    monkeypatch.delenv("GPUBOX_AWS_REGIONS")
    (isolation / "config").mkdir(parents=True)
    (isolation / "config" / "config.toml").write_text(f"aws_regions = {written}\n")
    settings = config.load()
    state = State(settings.state_path)
    session.remember_region(state, "ap-south-1")  # seen here before: always asked too
    assert inventory.search_regions(settings, state) == [
        "ap-south-1", "eu-west-1", "us-east-1", "us-west-2"
    ]  # fmt: skip
    state.close()


def test_a_new_laptop_finds_lists_and_stops_a_box_made_elsewhere(aws, settings, isolation):
    from gpubox.providers.aws import AwsProvider
    from tests.providers.aws.moto_seed import seed_images

    seed_images("eu-west-1")
    made = AwsProvider(settings, region_chooser=plain_region)
    made.wait_delay = 0.01
    box = made.launch(BoxSpec(name="box1", provider="aws", type="g4dn.xlarge",
                              region="eu-west-1", ssh_from=SSH_FROM))  # fmt: skip
    made.state.close()

    wide = dataclasses.replace(settings, aws_regions="us-west-2,eu-west-1,ap-south-1")
    empty = State(isolation / "other-laptop" / "state.sqlite")
    laptop = AwsProvider(wide, state=empty, region_chooser=plain_region)
    calls = count_calls(wide)
    found = laptop.find("box1")
    assert found is not None and (found.id, found.region) == (box.id, "eu-west-1")
    # One tag-filtered DescribeInstances per region, never one per box; sizes only where found.
    asked = sorted(r for op, r in calls if op == "DescribeInstances")
    assert asked == ["ap-south-1", "eu-west-1", "us-east-1", "us-west-2"]
    assert [r for op, r in calls if op == "DescribeVolumes"] == ["eu-west-1"]
    assert [b.name for b in laptop.list()] == ["box1"]
    assert "eu-west-1" in session.used_regions(empty)  # the fast path, for next time
    laptop.wait_delay = 0.01
    assert laptop.stop(found).state is BoxState.STOPPED
    empty.close()


def test_one_region_that_fails_is_told_and_the_others_still_answer():
    told: list[str] = []

    def ask(region: str) -> str:
        if region == "bad-1":
            raise GpuboxError("no access")
        return region.upper()

    answers = inventory.each_region(["a-1", "bad-1", "b-1"], ask, lambda r, e: told.append(r))
    assert answers == {"a-1": "A-1", "b-1": "B-1"} and told == ["bad-1"]
    with pytest.raises(GpuboxError, match="no access"):
        inventory.each_region(["bad-1"], ask)  # nothing answered: an error, not "no boxes"


def test_status_right_after_a_change_shows_the_change_from_the_cache(aws, settings):
    """stop, start, down and up update the cached box: `status` within the cache's life
    (no AWS call) never shows the box as it was."""
    from gpubox import box

    state = State(settings.state_path)
    spec = BoxSpec(name="box1", provider="aws", type="g4dn.xlarge", region="us-east-1",
                   ssh_from=SSH_FROM)  # fmt: skip
    box.up(settings, state, spec, setup=False)
    calls = count_calls(settings)

    def cached_states() -> list[tuple[str, str]]:
        before = len(calls)
        listed = [(b.name, b.state.value) for b in box.status(settings, state)]
        assert [op for op, _ in calls[before:]] == []  # from the cache
        return listed

    box.status(settings, state, refresh=True)
    assert cached_states() == [("box1", "running")]
    box.stop(settings, state, "box1")
    assert cached_states() == [("box1", "stopped")]
    box.start(settings, state, "box1")
    assert cached_states() == [("box1", "running")]
    box.down(settings, state, "box1", yes=True)
    assert cached_states() == []
    box.up(settings, state, spec, setup=False)
    assert cached_states() == [("box1", "running")]
    state.close()


def test_without_aws_credentials_status_never_asks_aws(isolation, monkeypatch):
    """An ssh-only (or local-only) user: `status --refresh` lists the boxes it has and
    sends nothing anywhere; with credentials it would ask every region."""
    import botocore.client

    from gpubox import box, config

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_SECURITY_TOKEN"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    sent: list[str] = []
    real = botocore.client.BaseClient._make_api_call
    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call",
                        lambda self, op, params: sent.append(op) or real(self, op, params))  # fmt: skip
    settings = config.load()
    state = State(settings.state_path)
    box.up(settings, state, BoxSpec(name="here", provider="local"), setup=False)
    assert [b.name for b in box.status(settings, state, refresh=True)] == ["here"]
    assert sent == []
    state.close()
