"""`bench --types` on the AWS side, against moto: it asks before it spends, and every box
it made is terminated, after success, failure, SIGINT and SIGTERM.

A moto "box" has no host to measure, so the suite step is passed in (TypeBench's `suite`
parameter): a stand-in that returns a stored-form record built from a canned result, or
fails, or signals this process, at the moment the real suite would be running.
"""

from __future__ import annotations

import os
import signal

import pytest

from gpubox.bench import fleet
from gpubox.bench.suite import SUITE, record
from gpubox.errors import ConfirmationRequired, GpuboxError
from gpubox.state import State
from tests.providers.aws.moto_seed import seed_images

TYPES = ["g4dn.xlarge", "g5.xlarge"]
CANNED = {
    "device": {"kind": "cuda", "name": "Tesla T4", "count": 1, "torch": "2.13.0"},
    "matmul": {"fp16": {"n": 8192, "tflops": 40.0, "ok": True}},
    "memory": {"copy_gbps": 250.0, "h2d_gbps": 12.0},
    "training": {"resnet18": {"images_per_s": 900.0}},
}


@pytest.fixture
def aws(settings, monkeypatch):
    from moto import mock_aws

    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)  # moto in-process, not a server
    with mock_aws():
        seed_images("us-east-1")
        yield settings.with_overrides(ssh_from="203.0.113.7/32")


def instances(states=("pending", "running", "stopping", "stopped")) -> list[dict]:
    import boto3

    found = boto3.client("ec2", region_name="us-east-1").describe_instances()["Reservations"]
    return [i for r in found for i in r["Instances"] if i["State"]["Name"] in states]


def plan(settings, cap: int = 30) -> fleet.Plan:
    state = State(settings.state_path)
    try:
        return fleet.make_plan(settings, state, TYPES, region="us-east-1", cap_minutes=cap)
    finally:
        state.close()


def canned_suite(settings, state, box, quick, cap):
    return record(box, CANNED, box.price_per_hour)


def test_the_plan_prices_the_worst_case_before_anything_is_launched(aws):
    p = plan(aws, cap=30)
    assert p.names == {"g4dn.xlarge": "bench-g4dn-xlarge", "g5.xlarge": "bench-g5-xlarge"}
    assert p.prices["g4dn.xlarge"] == pytest.approx(0.526)
    assert p.max_cost == pytest.approx(sum(p.prices.values()) * 0.5)
    assert f"at most ${p.max_cost:.2f}" in fleet.describe_cost(p)
    assert instances() == []


def test_without_a_yes_nothing_is_launched(aws):
    with pytest.raises(ConfirmationRequired, match="not launching anything"):
        fleet.TypeBench(aws, suite=canned_suite).run(plan(aws), confirm=lambda q: False)
    assert instances() == []


def test_each_type_is_measured_stored_and_every_box_terminated(aws):
    outcome = fleet.TypeBench(aws, suite=canned_suite).run(plan(aws), yes=True)
    assert set(outcome.records) == set(TYPES) and outcome.errors == {}
    made = instances(states=("terminated",))
    assert len(made) == 2 and instances() == []
    assert sorted(outcome.terminated) == ["bench-g4dn-xlarge", "bench-g5-xlarge"]
    state = State(aws.state_path)
    stored = {r["type"] for r in state.bench_results(SUITE)}
    assert stored == set(TYPES) and state.boxes() == []
    state.close()


def test_a_failing_suite_still_terminates_every_box(aws):
    def broken(settings, state, box, quick, cap):
        if box.type == "g5.xlarge":
            raise GpuboxError("the benchmark failed on the box (exit 1)")
        return canned_suite(settings, state, box, quick, cap)

    outcome = fleet.TypeBench(aws, suite=broken).run(plan(aws), yes=True)
    assert set(outcome.records) == {"g4dn.xlarge"} and "g5.xlarge" in outcome.errors
    assert instances() == [] and len(instances(states=("terminated",))) == 2


def test_a_bug_in_the_suite_still_terminates_every_box(aws):
    def buggy(settings, state, box, quick, cap):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        fleet.TypeBench(aws, suite=buggy).run(plan(aws), yes=True)
    assert instances() == [] and len(instances(states=("terminated",))) >= 1


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_run_terminates_every_box_made(aws, signum):
    def interrupted(settings, state, box, quick, cap):
        os.kill(os.getpid(), signum)  # a real signal, delivered to the main thread
        return canned_suite(settings, state, box, quick, cap)

    from gpubox import inflight

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(inflight.Interrupted) as caught:
        fleet.TypeBench(aws, suite=interrupted).run(plan(aws), yes=True)
    assert caught.value.exit_code == 128 + signum  # 130 or 143, as the shell reports it
    told = inflight.lines()
    assert "nothing is left of what it made" in told, told
    assert not any("undo it" in line for line in told), told  # every box is terminated
    assert instances() == []
    assert len(instances(states=("terminated",))) >= 1
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is put back


def test_an_existing_box_with_the_planned_name_is_never_touched(aws):
    from gpubox import box as lifecycle
    from gpubox.providers.base import BoxSpec

    state = State(aws.state_path)
    mine = lifecycle.up(aws, state, BoxSpec(name="bench-g4dn-xlarge", provider="aws",
                                            type="g4dn.xlarge", region="us-east-1",
                                            ssh_from=aws.ssh_from), setup=False).box
    state.close()
    p = plan(aws)
    assert p.names["g4dn.xlarge"] == "bench-g4dn-xlarge-2"
    fleet.TypeBench(aws, suite=canned_suite).run(p, yes=True)
    assert [i["InstanceId"] for i in instances()] == [mine.id]
