"""Preflight and failover through the real AwsProvider on moto.

Capacity refusals are raised for real inside moto's EC2 layer (moto has no capacity
model), so the InsufficientInstanceCapacity error code crosses the wire and goes
through gpubox's real error mapping. Service Quotas: botocore's Stubber on the very
client gpubox uses (moto has none for ec2).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time

import pytest
from botocore.stub import Stubber

from gpubox.errors import CapacityError, InvalidInput, QuotaExceeded
from gpubox.providers.aws import failover, session
from gpubox.providers.base import BoxSpec

SSH_FROM = "203.0.113.7/32"


def spec(**kw) -> BoxSpec:
    values = {"name": "box1", "provider": "aws", "type": "g5.xlarge", "ssh_from": SSH_FROM}
    values.update(kw)
    return BoxSpec(**values)


@pytest.fixture
def provider(aws, settings):
    """The AwsProvider as `gpubox up` makes it (default region choice: preflight + failover)."""
    from gpubox.providers.aws import AwsProvider

    messages: list[str] = []
    prov = AwsProvider(settings, on_progress=messages.append)
    prov.wait_delay = 0.01
    prov.messages = messages
    yield prov
    prov.state.close()


@pytest.fixture
def full(monkeypatch):
    """{(zone, type)} where moto's EC2 now answers InsufficientInstanceCapacity."""
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.models.instances import InstanceBackend

    places: set[tuple[str, str]] = set()
    real = InstanceBackend.run_instances

    def run_instances(self, image_id, count, user_data, security_group_names, **kwargs):
        where = (kwargs.get("placement"), kwargs.get("instance_type"))
        if where in places or ("*", kwargs.get("instance_type")) in places:
            raise EC2ClientError(
                "InsufficientInstanceCapacity",
                f"We currently do not have sufficient {where[1]} capacity in the "
                f"Availability Zone you requested ({where[0]}).",
            )
        return real(self, image_id, count, user_data, security_group_names, **kwargs)

    monkeypatch.setattr(InstanceBackend, "run_instances", run_instances)
    return places


def instances_of(ec2) -> list[dict]:
    return [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]


def leftovers(ec2) -> tuple[list[str], list[str]]:
    groups = [
        g["GroupName"]
        for g in ec2.describe_security_groups()["SecurityGroups"]
        if g["GroupName"].startswith("gpubox-")
    ]
    keys = [k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]]
    return groups, [k for k in keys if k.startswith("gpubox-")]


def zones(ec2, instance_type: str) -> list[str]:
    from gpubox.providers.aws.regions import zones_offering

    return zones_offering(ec2, instance_type)


def test_a_full_zone_is_skipped_for_the_next_one(provider, ec2, full):
    first, second, third = zones(ec2, "g5.xlarge")[:3]
    full.update({(first, "g5.xlarge"), (second, "g5.xlarge")})
    box = provider.launch(spec())
    placed = instances_of(ec2)
    assert len(placed) == 1 and placed[0]["Placement"]["AvailabilityZone"] == third
    tries = [m for m in provider.messages if m.startswith("try ")]
    assert tries == [
        f"try 1: g5.xlarge in {first}: no capacity now",
        f"try 2: g5.xlarge in {second}: no capacity now",
        f"try 3: g5.xlarge in {third}: launched",
    ]
    assert box.type == "g5.xlarge"


def test_acceptable_types_are_tried_in_order(provider, ec2, full):
    full.add(("*", "g6.xlarge"))
    box = provider.launch(spec(type=None, types=("g6.xlarge", "g5.xlarge")))
    assert box.type == "g5.xlarge"
    tried = [m for m in provider.messages if m.startswith("try ")]
    assert len(tried) == len(zones(ec2, "g6.xlarge")) + 1


def test_no_capacity_anywhere_leaves_nothing_behind(provider, ec2, full):
    full.add(("*", "g5.xlarge"))
    with pytest.raises(CapacityError) as caught:
        provider.launch(spec())
    assert "--any-region" in caught.value.hint
    assert instances_of(ec2) == []
    assert leftovers(ec2) == ([], [])
    assert not list((provider.settings.keys_dir).glob("box1*"))


def seed_latency(provider, nearest: list[str]) -> None:
    """Latency as if measured a moment ago: `nearest` first, every other region far."""
    from gpubox.providers.aws.regions import list_regions

    names = [r.name for r in list_regions(session.client(provider.settings, "ec2", "us-east-1"))]
    ms = {name: 500.0 for name in names}
    ms.update({name: 10.0 * (i + 1) for i, name in enumerate(nearest)})
    provider.state.put(
        "aws.latency",
        json.dumps({"endpoint": provider.settings.latency_endpoint, "at": time.time(), "ms": ms}),
    )


def test_any_region_moves_to_the_next_nearest_and_cleans_the_one_it_left(provider, full):
    import boto3

    from tests.providers.aws.moto_seed import seed_images

    for region in ("eu-west-1", "us-west-2"):
        seed_images(region)
    seed_latency(provider, ["eu-west-1", "us-west-2"])
    west = boto3.client("ec2", region_name="us-west-2")
    # us-east-1 (the configured region) and eu-west-1 (the nearest) are full; us-west-2 not.
    east_zones = set(zones(boto3.client("ec2", region_name="us-east-1"), "g5.xlarge"))
    eu_zones = set(zones(boto3.client("ec2", region_name="eu-west-1"), "g5.xlarge"))
    full.update((z, "g5.xlarge") for z in east_zones | eu_zones)  # ... us-west-2 is not
    box = provider.launch(spec(any_region=True))
    assert box.region == "us-west-2" and len(instances_of(west)) == 1
    for region in ("us-east-1", "eu-west-1"):
        assert leftovers(boto3.client("ec2", region_name=region)) == ([], [])
    assert any(m.startswith("giving up on us-east-1") for m in provider.messages)


def test_configured_failover_regions_are_tried_in_their_order(aws, settings, full):
    import boto3

    from gpubox.providers.aws import AwsProvider
    from tests.providers.aws.moto_seed import seed_images

    for region in ("eu-west-1", "us-west-2"):
        seed_images(region)
    # The user's list, not the latency ranking, orders the regions after the home one.
    messages: list[str] = []
    prov = AwsProvider(
        settings.with_overrides(failover_regions="eu-west-1, us-west-2"),
        on_progress=messages.append,
    )
    prov.wait_delay = 0.01
    east = set(zones(boto3.client("ec2", region_name="us-east-1"), "g5.xlarge"))
    eu = set(zones(boto3.client("ec2", region_name="eu-west-1"), "g5.xlarge"))
    full.update((z, "g5.xlarge") for z in east | eu)
    try:
        box = prov.launch(spec())
    finally:
        prov.state.close()
    assert box.region == "us-west-2"
    gave_up = [m.split()[3].rstrip(":") for m in messages if m.startswith("giving up on")]
    assert gave_up == ["us-east-1", "eu-west-1"]
    for region in ("us-east-1", "eu-west-1"):
        assert leftovers(boto3.client("ec2", region_name=region)) == ([], [])


def test_without_any_region_other_regions_are_not_tried(provider, ec2, full):
    seed_latency(provider, ["us-west-2"])
    full.add(("*", "g5.xlarge"))
    with pytest.raises(CapacityError):
        provider.launch(spec())
    assert not any("us-west-2" in m for m in provider.messages if m.startswith("try "))


@contextlib.contextmanager
def quota_of(provider, code: str, name: str, vcpus: float):
    """Service Quotas (absent in moto) answers this quota once, on the client gpubox uses."""
    sq = session.client(provider.settings, "service-quotas", "us-east-1")
    with Stubber(sq) as stub:
        stub.add_response(
            "get_service_quota",
            {"Quota": {"ServiceCode": "ec2", "QuotaCode": code, "Value": vcpus, "QuotaName": name}},
            {"ServiceCode": "ec2", "QuotaCode": code},
        )
        yield


def test_a_full_quota_stops_up_before_anything_is_made(provider, ec2):
    with quota_of(provider, "L-DB2E81BA", "Running On-Demand G and VT instances", 0.0):
        with pytest.raises(QuotaExceeded) as caught:
            provider.launch(spec())
    assert "needs 4 vCPUs" in caught.value.message
    assert "gpubox quota request --type g5.xlarge --region us-east-1" in caught.value.hint
    assert instances_of(ec2) == [] and leftovers(ec2) == ([], [])


def set_spot_prices(settings, region: str, prices: dict[str, str]) -> None:
    """An event hook on the real client: moto prices every zone at 0.00001."""
    ec2 = session.client(settings, "ec2", region)

    def rewrite(parsed, **_):
        for item in parsed.get("SpotPriceHistory", []):
            item["SpotPrice"] = prices.get(item["AvailabilityZone"], "9.99")

    ec2.meta.events.register("after-call.ec2.DescribeSpotPriceHistory", rewrite)


def test_a_max_price_below_the_spot_price_creates_nothing(provider, ec2):
    set_spot_prices(provider.settings, "us-east-1", {"us-east-1a": "0.4500", "us-east-1b": "0.5"})
    with pytest.raises(InvalidInput) as caught:
        provider.launch(spec(spot=True, max_price=0.30))
    assert "$0.3000/h is below the current spot price" in caught.value.message
    assert "$0.4500/h" in caught.value.message and "us-east-1a" in caught.value.message
    assert instances_of(ec2) == [] and leftovers(ec2) == ([], [])


def test_spot_launch_shows_the_price_and_uses_only_zones_within_max_price(provider, ec2):
    set_spot_prices(provider.settings, "us-east-1", {"us-east-1b": "0.4000"})
    provider.launch(spec(spot=True, max_price=0.45))
    assert any("g5.xlarge spot $0.4000/h against on-demand" in m for m in provider.messages)
    placed = instances_of(ec2)
    assert [i["Placement"]["AvailabilityZone"] for i in placed] == ["us-east-1b"]
    assert placed[0].get("InstanceLifecycle") == "spot"


def test_preflight_costs_a_handful_of_api_calls(aws, settings):
    calls: list[str] = []

    def count(model, **_):
        if model.service_model.service_name != "service-quotas":  # counted by the Stubber
            calls.append(model.name)

    session.aws_session(settings).boto().events.register("before-call", count)
    state = session_state(settings)
    provider_like = type("P", (), {"settings": settings, "state": state})()
    seed_latency(provider_like, ["us-east-1"])  # as measured a moment ago
    calls.clear()
    sq = session.client(settings, "service-quotas", "us-east-1")
    with Stubber(sq) as stub:
        stub.add_response(
            "get_service_quota",
            {"Quota": {"ServiceCode": "ec2", "QuotaCode": "L-3819A6DF", "Value": 64.0}},
            {"ServiceCode": "ec2", "QuotaCode": "L-3819A6DF"},
        )
        plan = failover.preflight(
            dataclasses.replace(settings, region=None),
            state,
            types=("g5.xlarge",), spot_market=True, max_price=None,
            ec2_for=lambda r: session.client(settings, "ec2", r),
            sq_for=lambda r: session.client(settings, "service-quotas", r),
            on_demand_price=lambda region, t: 1.006,
        )  # fmt: skip
        stub.assert_no_pending_responses()
    calls.append("GetServiceQuota")  # the one stubbed call, consumed above
    assert plan.region == "us-east-1" and plan.spot_price is not None and plan.quota is not None
    print("preflight API calls:", len(calls), calls)
    assert sorted(calls) == sorted(
        ["DescribeRegions", "DescribeInstanceTypes", "DescribeInstanceTypeOfferings",
         "DescribeInstances", "GetServiceQuota", "DescribeSpotPriceHistory"]
    )  # fmt: skip


def session_state(settings):
    from gpubox.state import State

    return State(settings.state_path)


def test_a_new_up_asks_aws_each_question_once(aws, capsys, monkeypatch):
    """The whole `gpubox up NAME --no-setup` of a new box: every request counted at
    botocore's client (all services), none asked twice but the look for a second
    instance of the name after the launch (the world may have changed: a racing `up`)."""
    import collections

    import botocore.client

    from tests.cli.test_money import gpubox

    calls: list[tuple[str, str, str]] = []
    real = botocore.client.BaseClient._make_api_call

    def spy(self, operation, params):
        calls.append((operation, self.meta.region_name, repr(sorted(params.items()))))
        return real(self, operation, params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", spy)
    code, _, err = gpubox(capsys, "up", "box1", "--type", "g4dn.xlarge", "--no-setup",
                          "--ssh-from", SSH_FROM)  # fmt: skip
    assert code == 0, err
    print("up --no-setup requests:", len(calls), [c[0] for c in calls])
    repeated = {c: n for c, n in collections.Counter(calls).items() if n > 1}
    assert [(op, n) for (op, _, _), n in repeated.items()] == [("DescribeInstances", 2)]
    ops = collections.Counter(c[0] for c in calls)
    assert ops["DescribeInstanceTypes"] == 1 and ops["DescribeInstanceTypeOfferings"] == 1
    assert len(calls) <= 22  # 26 before, 4 of them repeats


def test_the_quota_must_hold_every_node_of_a_box_before_any_is_made(provider, ec2):
    """`up duo --nodes 4 --type p4d.24xlarge`: room for one node is not enough."""
    with quota_of(provider, "L-417A185B", "Running On-Demand P instances", 192.0):
        with pytest.raises(QuotaExceeded) as caught:
            provider.launch(spec(name="duo", type="p4d.24xlarge", cluster="duo", nodes=4))
    assert "4 nodes of p4d.24xlarge need 384 vCPUs" in caught.value.message
    assert "192 vCPUs with 0 in use: 192 free" in caught.value.message
    assert caught.value.hint.endswith("--type p4d.24xlarge --region us-east-1 --count 4")
    assert instances_of(ec2) == [] and leftovers(ec2) == ([], [])
