"""The real `gpubox bench` command against moto's server: money and stopped boxes."""

from __future__ import annotations

import pytest

from tests.cli.conftest import moto_server  # noqa: F401 - the fixture, shared
from tests.cli.test_aws_subprocess import SSH_FROM, gpubox, live_instances, run_in_terminal
from tests.providers.aws.moto_seed import seed_images


@pytest.fixture
def endpoint(moto_server, isolation, monkeypatch):  # noqa: F811
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST"))
    seed_images("us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    return moto_server


def test_bench_types_without_a_terminal_or_yes_shows_the_cost_and_launches_nothing(endpoint):
    done = gpubox("bench", "--types", "g4dn.xlarge,g5.xlarge", "--region", "us-east-1",
                  "--max-minutes", "30")
    assert done.returncode != 0
    # $0.526/h + $1.006/h for at most half an hour each.
    assert "at most $0.77" in done.stderr
    assert "not launching anything" in done.stderr and "--yes" in done.stderr
    assert "Traceback" not in done.stderr
    assert live_instances(endpoint) == []


def test_bench_types_with_an_unknown_type_names_the_close_one(endpoint):
    done = gpubox("bench", "--types", "g4dn.xlarge,g5.xlarg", "--region", "us-east-1", "--yes")
    assert done.returncode != 0 and "did you mean 'g5.xlarge'" in done.stderr
    assert live_instances(endpoint) == []


def test_bench_on_a_stopped_box_says_so_and_how_to_start_it(endpoint):
    assert gpubox("up", "box1", "--type", "g4dn.xlarge", "--no-setup",
                  "--ssh-from", SSH_FROM).returncode == 0
    assert gpubox("stop", "box1").returncode == 0
    done = gpubox("bench", "box1")
    assert done.returncode != 0
    assert "box 'box1' is stopped" in done.stderr and "gpubox start box1" in done.stderr
    assert live_instances(endpoint)[0]["State"]["Name"] == "stopped"  # not started unasked


def test_at_a_terminal_the_cost_question_answered_no_launches_nothing(endpoint):
    code, shown = run_in_terminal(
        ["bench", "--types", "g4dn.xlarge", "--region", "us-east-1", "--max-minutes", "60"],
        [("Launch them?", "n")],
    )
    assert code != 0 and "not launching anything" in shown
    assert "at most $0.53" in shown  # the question says the most it can cost
    assert live_instances(endpoint) == []


def test_at_a_terminal_a_stopped_box_is_started_only_with_a_yes(endpoint):
    assert gpubox("up", "box1", "--type", "g4dn.xlarge", "--no-setup",
                  "--ssh-from", SSH_FROM).returncode == 0
    assert gpubox("stop", "box1").returncode == 0
    code, shown = run_in_terminal(["bench", "box1"], [("Start it", "n")])
    assert code != 0 and "gpubox start box1" in shown
    assert live_instances(endpoint)[0]["State"]["Name"] == "stopped"
