"""Cost arithmetic on fixed prices, fixed launch times and a fixed clock."""

from __future__ import annotations

import datetime as dt

import pytest

from gpubox import cost
from gpubox.providers.base import Box, BoxState
from gpubox.state import State

HOUR = 3600.0


def at(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()


NOW = at("2026-03-10T12:00:00")
G4 = cost.Rate(0.526, "h", "test", "2026-03-01")
GP3 = cost.Rate(0.08, "GB-month", "test", "2026-03-01")
SNAP = cost.Rate(0.05, "GB-month", "test", "2026-03-01")


def box(state=BoxState.RUNNING, **kw):
    values = dict(name="b1", provider="aws", state=state, type="g4dn.xlarge", region="us-east-1",
                  disk_gb=100, price_per_hour=0.526)  # fmt: skip
    values.update(kw)
    return Box(**values)


def test_month_start_is_utc_first_of_month():
    assert cost.month_start(NOW) == at("2026-03-01T00:00:00")
    assert cost.month_start(at("2026-03-01T00:00:00")) == at("2026-03-01T00:00:00")


def test_spend_of_closed_and_open_runs():
    runs = [
        {"started_at": NOW - 30 * HOUR, "stopped_at": NOW - 20 * HOUR, "price_per_hour": 0.526},
        {"started_at": NOW - 2 * HOUR, "stopped_at": None, "price_per_hour": 0.526},
    ]
    result = cost.box_cost(box(), runs, NOW, hourly=G4, storage=None)
    assert result.hours_run == pytest.approx(12.0)
    assert result.spent_compute == pytest.approx(12 * 0.526)
    assert result.per_hour == 0.526


def test_run_priced_at_its_own_price_when_it_has_one():
    runs = [{"started_at": NOW - 10 * HOUR, "stopped_at": NOW - 9 * HOUR, "price_per_hour": 1.006},
            {"started_at": NOW - 5 * HOUR, "stopped_at": NOW - 4 * HOUR, "price_per_hour": None}]  # fmt: skip
    result = cost.box_cost(box(state=BoxState.STOPPED), runs, NOW, hourly=G4, storage=None)
    assert result.spent_compute == pytest.approx(1.006 + 0.526)


def test_launch_time_counts_when_gpubox_missed_the_start():
    running = box(launched_at=NOW - 3 * HOUR)
    result = cost.box_cost(running, [], NOW, hourly=G4, storage=None)
    assert result.spent_compute == pytest.approx(3 * 0.526)
    # ...and is not counted twice when a run covers it.
    runs = [{"started_at": NOW - 3 * HOUR, "stopped_at": None, "price_per_hour": 0.526}]
    result = cost.box_cost(running, runs, NOW, hourly=G4, storage=None)
    assert result.spent_compute == pytest.approx(3 * 0.526)


def test_overlapping_runs_are_not_double_counted():
    runs = [{"started_at": NOW - 10 * HOUR, "stopped_at": NOW - 6 * HOUR},
            {"started_at": NOW - 8 * HOUR, "stopped_at": NOW - 4 * HOUR}]  # fmt: skip
    result = cost.box_cost(box(state=BoxState.STOPPED), runs, NOW, hourly=G4, storage=None)
    assert result.hours_run == pytest.approx(6.0)


def test_month_so_far_clips_runs_at_the_first_of_the_month():
    runs = [{"started_at": at("2026-02-28T22:00:00"), "stopped_at": at("2026-03-01T03:00:00"),
             "price_per_hour": 1.0}]  # fmt: skip
    result = cost.box_cost(box(state=BoxState.STOPPED), runs, NOW, hourly=None, storage=None)
    assert result.spent_compute == pytest.approx(5.0)
    assert result.month_compute == pytest.approx(3.0)


def test_stopped_disk_costs_gb_month_prorated():
    made = at("2026-02-09T12:00:00")  # 29 days before NOW
    stopped = box(state=BoxState.STOPPED, created_at=made, disk_gb=100)
    result = cost.box_cost(stopped, [], NOW, hourly=G4, storage=GP3)
    assert result.storage_per_month == pytest.approx(8.0)
    assert result.spent_storage == pytest.approx(100 * 0.08 * 29 * 24 / 730)
    assert result.month_storage == pytest.approx(100 * 0.08 * (9 * 24 + 12) / 730)
    assert result.spent_compute == 0.0


def test_image_cost_and_report_totals():
    image = cost.image_cost("base", "ami-1", "us-east-1", 64, at("2026-03-09T12:00:00"), NOW, SNAP)
    assert image.per_month == pytest.approx(3.2)
    assert image.spent == pytest.approx(64 * 0.05 * 24 / 730)

    running = box(name="a", launched_at=NOW - HOUR, disk_gb=50)
    stopped = box(name="b", state=BoxState.STOPPED, disk_gb=100, created_at=NOW - 730 * HOUR)
    runs = {"a": [], "b": [{"started_at": NOW - 740 * HOUR, "stopped_at": NOW - 730 * HOUR}]}
    report = cost.report(
        [running, stopped], runs.__getitem__, [image], NOW,
        hourly_of=lambda b: G4, storage_of=lambda b: GP3,
    )  # fmt: skip
    assert report.running_per_hour == pytest.approx(0.526)  # the stopped one bills no compute
    assert report.kept_per_month == pytest.approx(50 * 0.08 + 100 * 0.08 + 3.2)
    b = report.boxes[1]
    assert b.spent == pytest.approx(10 * 0.526 + 8.0)
    data = report.to_dict()
    assert data["boxes"][0]["hourly_rate"]["source"] == "test"
    assert data["images"][0]["rate"]["date"] == "2026-03-01"


def test_runs_recorded_in_state_feed_the_cost(tmp_path):
    state = State(tmp_path / "s.sqlite")
    state.run_started("b1", "g4dn.xlarge", 0.526, NOW - 5 * HOUR)
    state.run_stopped("b1", NOW - 3 * HOUR)
    state.run_started("b1", "g4dn.xlarge", 0.526, NOW - HOUR)
    result = cost.box_cost(box(), state.runs("b1"), NOW, hourly=G4, storage=None)
    assert result.hours_run == pytest.approx(3.0)
    state.close()


def test_a_run_ends_at_ec2s_stop_time_when_gpubox_notices_only_later():
    # The idle agent stopped it after 3 h; gpubox looks 22 h later (`start`, `up`, `status`).
    runs = [{"started_at": NOW - 25 * HOUR, "stopped_at": None, "price_per_hour": 1.006}]
    stopped = box(state=BoxState.STOPPED, extra=(("stopped_at", f"{NOW - 22 * HOUR:.0f}"),))
    result = cost.box_cost(stopped, runs, NOW, hourly=None, storage=None)
    assert result.hours_run == pytest.approx(3.0)
    assert result.spent_compute == pytest.approx(3 * 1.006)


def test_the_next_start_closes_the_old_run_at_the_stop_time_however_it_stopped(tmp_path):
    from gpubox.box import _record_run

    state = State(tmp_path / "s.sqlite")
    state.run_started("b1", "g4dn.xlarge", 1.006, NOW - 25 * HOUR)
    stopped = box(state=BoxState.STOPPED, price_per_hour=1.006,
                  extra=(("stopped_at", f"{NOW - 22 * HOUR:.0f}"),))  # fmt: skip
    _record_run(state, stopped)  # what `start`, `up` and `stop` of a stopped box do first
    _record_run(state, stopped)  # twice (stop of a stopped box again): nothing changes
    _record_run(state, box(price_per_hour=1.006, launched_at=NOW - HOUR))  # started again
    result = cost.box_cost(box(price_per_hour=1.006, launched_at=NOW - HOUR), state.runs("b1"),
                           NOW, hourly=None, storage=None)  # fmt: skip
    assert result.hours_run == pytest.approx(4.0)  # 3 h, then 1 h; not 25 h
    state.close()


def test_the_public_ipv4_address_is_billed_while_the_box_runs():
    runs = [{"started_at": NOW - 10 * HOUR, "stopped_at": None, "price_per_hour": 0.526}]
    result = cost.box_cost(box(), runs, NOW, hourly=G4, storage=None, address_per_hour=0.005)
    assert result.spent_compute == pytest.approx(10 * (0.526 + 0.005))
    report = cost.report([box()], lambda _: runs, [], NOW, hourly_of=lambda b: G4,
                         storage_of=lambda b: None, address_of=lambda b: 0.005)  # fmt: skip
    assert report.running_per_hour == pytest.approx(0.531)


def test_the_month_keeps_boxes_that_were_downed():
    runs = {
        "gone": [{"started_at": NOW - 5 * HOUR, "stopped_at": NOW - 3 * HOUR, "price_per_hour": 1.0}],
        "last-month": [{"started_at": at("2026-02-10T00:00:00"),
                        "stopped_at": at("2026-02-10T05:00:00"), "price_per_hour": 1.0}],
        "b1": [],
    }  # fmt: skip
    report = cost.report([box(state=BoxState.STOPPED)], runs.__getitem__, [], NOW,
                         hourly_of=lambda b: G4, storage_of=lambda b: None,
                         gone=["gone", "last-month", "b1"])  # fmt: skip
    assert [(b.name, b.state) for b in report.boxes] == [("b1", "stopped"), ("gone", "terminated")]
    assert report.month_so_far == pytest.approx(2.0)
    assert report.running_per_hour == 0.0


def test_with_local_history_lost_cost_rebuilds_from_aws_and_says_since_when():
    made = NOW - 10 * 24 * HOUR
    running = box(created_at=made, launched_at=NOW - 2 * HOUR)
    result = cost.box_cost(running, [], NOW, hourly=G4, storage=None)
    assert result.hours_run == pytest.approx(2.0)
    assert result.complete_from == NOW - 2 * HOUR
    stopped = box(name="b2", state=BoxState.STOPPED, created_at=made,
                  extra=(("launch_time", f"{NOW - 8 * HOUR:.0f}"),
                         ("stopped_at", f"{NOW - 5 * HOUR:.0f}")))  # fmt: skip
    rebuilt = cost.box_cost(stopped, [], NOW, hourly=G4, storage=None)
    assert rebuilt.hours_run == pytest.approx(3.0)  # its last run, from EC2's two times
    assert rebuilt.complete_from == NOW - 8 * HOUR
    report = cost.report([running, stopped], lambda _: [], [], NOW, hourly_of=lambda b: G4,
                         storage_of=lambda b: None)  # fmt: skip
    assert report.complete_from == NOW - 2 * HOUR
    assert report.to_dict()["complete_from"] == NOW - 2 * HOUR
    # A box whose whole history is here: complete.
    here = [{"started_at": made + 60, "stopped_at": None, "price_per_hour": 0.526}]
    assert cost.box_cost(box(created_at=made), here, NOW, hourly=G4, storage=None).complete_from is None
