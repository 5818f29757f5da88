"""Inputs that cannot be right are refused before anything is made or asked of AWS:
the real `gpubox` command as a subprocess, against moto's server (or, for region
typos, against an AWS endpoint where nothing listens, so any call at all would show)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.cli import test_aws_subprocess
from tests.cli.test_aws_subprocess import SSH_FROM, live_instances

endpoint = test_aws_subprocess.endpoint  # the fixture: a wiped moto world, AWS_ENDPOINT_URL set
DEAD_ENDPOINT = "http://127.0.0.1:9"  # nothing listens: any AWS call fails "cannot reach AWS"


def gpubox(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gpubox", *args],
        capture_output=True, text=True, stdin=subprocess.DEVNULL,
        env={**os.environ, **env}, timeout=120,
    )  # fmt: skip


def refused(done: subprocess.CompletedProcess, *phrases: str) -> None:
    assert done.returncode != 0, done.stdout + done.stderr
    assert "internal error" not in done.stderr and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: "), done.stderr
    for phrase in phrases:
        assert phrase in done.stderr, done.stderr


UP = ("up", "box1", "--no-setup", "--ssh-from", SSH_FROM)


@pytest.mark.parametrize(
    ("args", "phrases"),
    [
        (("--type", "g4dn.xlarge", "--disk", "20000"), ("--disk 20000", "16384")),
        (("--type", "g4dn.xlarge", "--max-price", "0.3"), ("--max-price", "--spot")),
        (("--type", "g4dn.xlarge", "--region", ""), ("no AWS region called ''",)),
        (("--type", "g4dn.xlarge,t3.micro"), ("t3.micro", "not a GPU type")),
        (("--type", "g4dn.xlarge", "--host", "me@127.0.0.1:1"), ("--host and --type",)),
        (("--provider", "local", "--port", "70000"), ("--port 70000 is not a TCP port",)),
        (("--host", "me@127.0.0.1:70000"), ("70000 is not a TCP port",)),
    ],
    ids=["disk", "max-price", "empty-region", "non-gpu-type", "host-and-type", "port", "host-port"],
)
def test_up_refuses_an_impossible_input_and_makes_nothing(endpoint, isolation, args, phrases):
    refused(gpubox(*UP, *args), *phrases)
    assert live_instances(endpoint) == []
    assert not (isolation / "data" / "keys" / "box1.pem").exists()


def test_jupyter_refuses_a_port_out_of_range():
    refused(gpubox("jupyter", "box1", "--port", "70000"), "--port 70000 is not a TCP port")


def test_a_wide_ssh_from_says_how_wide_and_needs_yes(endpoint):
    wide = ("up", "box1", "--type", "g4dn.xlarge", "--no-setup", "--ssh-from", "0.0.0.0/1")
    refused(gpubox(*wide), "2,147,483,648 addresses", "--yes")
    assert live_instances(endpoint) == []
    done = gpubox(*wide, "--yes")
    assert done.returncode == 0, done.stderr
    assert len(live_instances(endpoint)) == 1


def test_a_small_network_needs_no_yes(endpoint):
    done = gpubox("up", "box1", "--type", "g4dn.xlarge", "--no-setup", "--ssh-from", "198.51.100.0/22")
    assert done.returncode == 0, done.stderr


def test_up_of_an_existing_box_with_another_type_and_disk_says_what_it_is(endpoint):
    made = gpubox(*UP, "--type", "g4dn.xlarge")
    assert made.returncode == 0, made.stderr
    again = gpubox(*UP, "--type", "p5.48xlarge", "--disk", "500")
    refused(again, "g4dn.xlarge", "64 GB", "gpubox resize box1 --type p5.48xlarge --disk 500")
    assert "found box" not in again.stdout + again.stderr
    (inst,) = live_instances(endpoint)
    assert inst["InstanceType"] == "g4dn.xlarge"
    same = gpubox(*UP, "--type", "g4dn.xlarge")  # asking for what it is: found, as before
    assert same.returncode == 0 and "found box 'box1'" in same.stderr


def test_an_unknown_aws_profile_is_named():
    refused(gpubox("types", AWS_PROFILE="nope"), "AWS profile 'nope' is not configured")


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (("up", "box1", "--type", "g4dn.xlarge", "--no-setup", "--ssh-from", SSH_FROM,
          "--region", "us-east-l"), {}),
        (("up", "box1", "--type", "g4dn.xlarge", "--no-setup", "--ssh-from", SSH_FROM),
         {"AWS_DEFAULT_REGION": "us-east-l"}),
        (("types", "--region", "us-east-l"), {}),
        (("gc", "--region", "us-east-l"), {}),
    ],
    ids=["up-flag", "up-env", "types", "gc"],
)  # fmt: skip
def test_a_region_typo_is_one_line_with_the_closest_region_before_any_call(args, env):
    done = gpubox(*args, AWS_ENDPOINT_URL=DEAD_ENDPOINT, **env)
    refused(done, "there is no AWS region called 'us-east-l'", "did you mean 'us-east-1'?")
    assert "cannot reach AWS" not in done.stderr  # no call was made anywhere
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[1].startswith("hint:"), done.stderr


@pytest.mark.parametrize(
    "args",
    [("up", "x", "--type", "g4dn.xlarg"), ("up", "x", "--type", "g5.2xlarge,g4dn.xlarg"),
     ("start", "x", "--type", "g4dn.xlarg"), ("resize", "x", "--type", "g4dn.xlarg"),
     ("regions", "--type", "g4dn.xlarg"), ("quota", "request", "--type", "g4dn.xlarg")],
    ids=["up", "up-list", "start", "resize", "regions", "quota-request"],
)  # fmt: skip
@pytest.mark.parametrize("credentials", ["none", "dead-endpoint"])
def test_a_misspelt_type_is_named_before_any_credentials_check(args, credentials):
    """No credentials at all (a new laptop), or credentials and an AWS where nothing
    listens: either way the answer is the typo and the type of the offline price list."""
    env = {"AWS_ENDPOINT_URL": DEAD_ENDPOINT}
    if credentials == "none":
        env.update(AWS_ACCESS_KEY_ID="", AWS_SECRET_ACCESS_KEY="", AWS_SESSION_TOKEN="",
                   AWS_SECURITY_TOKEN="")  # fmt: skip
    done = gpubox(*args, **env)
    refused(done, "'g4dn.xlarg' is not an EC2 instance type", "did you mean 'g4dn.xlarge'?")
    assert "credentials" not in done.stderr and "cannot reach AWS" not in done.stderr
    assert "no box called" not in done.stderr  # named before the box is looked for


@pytest.mark.parametrize(
    ("args", "named"),
    [(("up", ""), "NAME"), (("up", " ", "--provider", "local"), "NAME"),
     (("up", "x", "--type", "g4dn.xlarge", "--volume", ""), "--volume"),
     (("up", "x", "--host", ""), "--host"), (("up", "x", "--provider", "local", "--image", ""),
                                             "--image"),
     (("image", "x", "--as", ""), "--as"), (("volume", "rm", ""), "NAME"),
     (("stop", ""), "NAME"), (("start", ""), "NAME"), (("down", "", "--yes"), "NAME"),
     (("ssh", ""), "NAME"), (("status", ""), "NAME"), (("run", "", "--", "true"), "NAME"),
     (("config", "set", "", "1"), "NAME")],
    ids=["up", "up-spaces", "up-volume", "up-host", "up-image", "image-as", "volume-rm",
         "stop", "start", "down", "ssh", "status", "run", "config-set"],
)  # fmt: skip
def test_an_empty_name_is_refused_before_anything_is_looked_up(isolation, args, named):
    """An AWS where nothing listens: any call at all would show as 'cannot reach AWS'."""
    done = gpubox(*args, AWS_ENDPOINT_URL=DEAD_ENDPOINT)
    refused(done, f"{named} is empty: it must name something", "--help`")
    assert done.returncode == 2
    assert "cannot reach AWS" not in done.stderr and "no box called" not in done.stderr
    assert not (isolation / "data" / "local.json").exists()  # nothing made here either


def test_up_with_no_region_and_no_latency_goes_to_us_east_1_and_says_why(endpoint):
    env = {k: v for k, v in os.environ.items() if k not in ("AWS_DEFAULT_REGION", "AWS_REGION")}
    done = subprocess.run(
        [sys.executable, "-m", "gpubox", *UP, "--type", "g4dn.xlarge"],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "region us-east-1 (latency could not be measured" in done.stderr
    assert "the most GPU capacity" in done.stderr
    (inst,) = live_instances(endpoint)
    assert inst["Placement"]["AvailabilityZone"].startswith("us-east-1")
