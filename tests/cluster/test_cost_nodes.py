"""`cost` of a box of several nodes: one row under node 0's name, the nodes summed.

Pure arithmetic on fixed prices, runs and clock (as tests/test_cost.py); the text
table through the real `cost` command's renderer.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest

from gpubox import cost
from gpubox.providers.base import Box, BoxState

HOUR = 3600.0
NOW = dt.datetime(2026, 3, 10, 12, tzinfo=dt.UTC).timestamp()
P4D = cost.Rate(32.77, "h", "test", "2026-03-01")
GP3 = cost.Rate(0.08, "GB-month", "test", "2026-03-01")


def node(name: str, rank: int | None, state=BoxState.RUNNING) -> Box:
    extra = (("cluster", "pair"), ("node", str(rank))) if rank is not None else ()
    return Box(name=name, provider="aws", state=state, type="p4d.24xlarge", region="us-east-1",
               disk_gb=100, price_per_hour=32.77, created_at=NOW - 10 * HOUR, extra=extra)


RUNS = {
    "pair": [{"started_at": NOW - 3 * HOUR, "stopped_at": None, "price_per_hour": 32.77}],
    "pair-1": [{"started_at": NOW - 2 * HOUR, "stopped_at": None, "price_per_hour": 32.77}],
    "solo": [{"started_at": NOW - HOUR, "stopped_at": NOW - HOUR / 2, "price_per_hour": 32.77}],
}


def make(boxes):
    return cost.report(boxes, RUNS.__getitem__, [], NOW, hourly_of=lambda b: P4D,
                       storage_of=lambda b: GP3, address_of=lambda b: 0.005)


def test_the_nodes_are_one_box_summed_under_node_0s_name():
    # Listed node 1 first (status order is not guaranteed to put node 0 first).
    report = make([node("pair-1", 1), node("solo", None, BoxState.STOPPED), node("pair", 0)])
    assert [(b.name, b.nodes, b.state) for b in report.boxes] == [
        ("pair", 2, "running"), ("solo", 1, "stopped")]
    pair = report.boxes[0]
    assert [n.name for n in pair.node_costs] == ["pair", "pair-1"]
    assert pair.hours_run == pytest.approx(5.0)  # node-hours: 3 h + 2 h
    assert pair.spent_compute == pytest.approx(5 * (32.77 + 0.005))
    assert pair.per_hour == pytest.approx(2 * 32.77)
    assert pair.storage_per_month == pytest.approx(2 * 100 * 0.08)
    assert report.running_per_hour == pytest.approx(2 * (32.77 + 0.005))
    assert report.spent == pytest.approx(pair.spent + report.boxes[1].spent)

    data = json.loads(json.dumps(report.to_dict()))
    box = data["boxes"][0]
    assert (box["name"], box["nodes"]) == ("pair", 2)
    assert [(n["name"], n["nodes"]) for n in box["node_costs"]] == [("pair", 1), ("pair-1", 1)]
    assert box["node_costs"][1]["hours_run"] == pytest.approx(2.0)
    assert data["boxes"][1]["node_costs"] == []


def test_a_box_with_one_node_stopped_bills_only_the_running_one():
    report = make([node("pair", 0), node("pair-1", 1, BoxState.STOPPED)])
    pair = report.boxes[0]
    assert pair.state == "1/2 running"
    assert report.running_per_hour == pytest.approx(32.77 + 0.005)


def test_the_cost_table_shows_one_row_with_the_node_count(capsys):
    from gpubox.cli.money import _show_report

    _show_report(make([node("pair", 0), node("pair-1", 1)]))
    shown = capsys.readouterr()
    out = shown.out
    rows = [line for line in out.splitlines() if line.startswith("pair")]
    assert len(rows) == 1 and "(2 nodes)" in out, out
    assert "$65.55" in rows[0]  # 2 x (32.77 + 0.005) per hour now
    assert "pair-1" not in out
    assert "$0.005/h" in shown.err  # the address's price is per node, not summed


def test_a_downed_box_of_several_nodes_stays_one_row_in_the_months_total():
    gone_runs = {
        "pair": [{"started_at": NOW - 3 * HOUR, "stopped_at": NOW - HOUR,
                  "price_per_hour": 32.77, "cluster": "pair"}],
        "pair-1": [{"started_at": NOW - 3 * HOUR, "stopped_at": NOW - HOUR,
                    "price_per_hour": 32.77, "cluster": "pair"}],
        "solo": [{"started_at": NOW - HOUR, "stopped_at": NOW - HOUR / 2,
                  "price_per_hour": 32.77, "cluster": None}],
    }  # fmt: skip
    report = cost.report([], gone_runs.__getitem__, [], NOW, hourly_of=lambda b: P4D,
                         storage_of=lambda b: GP3, gone=["pair-1", "solo", "pair"])
    assert [(b.name, b.nodes, b.state) for b in report.boxes] == [
        ("pair", 2, "terminated"), ("solo", 1, "terminated")]
    pair = report.boxes[0]
    assert [n.name for n in pair.node_costs] == ["pair", "pair-1"]
    assert pair.hours_run == pytest.approx(4.0) and pair.month == pytest.approx(4 * 32.77)


def test_a_nodes_run_remembers_its_box(tmp_path):
    from gpubox.state import State

    state = State(tmp_path / "state.sqlite")
    try:
        state.run_started("pair-1", "p4d.24xlarge", 32.77, NOW, "pair")
        state.run_started("solo", "g5.xlarge", 1.0, NOW)
        assert [(r["name"], r["cluster"]) for r in state.runs()] == [
            ("pair-1", "pair"), ("solo", None)]
    finally:
        state.close()
