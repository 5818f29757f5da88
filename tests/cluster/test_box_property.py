"""The property behind the hand-picked interruption tests: for a box of 1-3 nodes, a
random command (up, stop, start, down) cut by SIGINT or SIGTERM at a random moment,
then the finish or the undo it printed, run as printed, ends with what AWS bills under
gpubox's tags being exactly what `status --refresh` and `cost` show from an empty HOME;
after the undo, nothing of the box is left at all.

Seeded: the seed and the number of runs are printed, and GPUBOX_PROPERTY_SEED replays a
failure (each run draws from the seed and its own number, so a run replays the same
whatever ran beside it). 30 runs by default (CI); GPUBOX_PROPERTY_RUNS=200 for the nightly size. The
real `gpubox` command against moto's server in this process (placement groups from
tests/cluster/moto_placement.py); g4dn.xlarge has no EFA, so moto shows every
instance's security group.
"""

from __future__ import annotations

import json
import os
import random
import re
import shlex
import signal
import subprocess
import sys
import time

import pytest

from tests.cluster.test_nodes_aws import SSH_FROM, ec2, live, tags

RUNS = int(os.environ.get("GPUBOX_PROPERTY_RUNS", "30"))
SEED = int(os.environ.get("GPUBOX_PROPERTY_SEED", str(int(time.time()) % 100000)))
PER_HOUR = 0.526 + 0.005  # g4dn.xlarge in the price snapshot, and its public IPv4 address


def run(*args: str, home: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    if home is not None:
        env["GPUBOX_HOME"] = home
    return subprocess.run([sys.executable, "-m", "gpubox", *args], capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, env=env, timeout=180)


def interrupted(args: list[str], after: float, signum: int, home: str) -> tuple[int, str]:
    proc = subprocess.Popen([sys.executable, "-m", "gpubox", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                            env={**os.environ, "COLUMNS": "200", "GPUBOX_HOME": home})  # fmt: skip
    try:
        time.sleep(after)
        if proc.poll() is None:
            proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, err


def printed(err: str, what: str) -> list[str] | None:
    found = re.search(rf"^{what} it:\s+gpubox (.+)$", err, re.MULTILINE)
    return shlex.split(found.group(1)) if found else None


def aws_view(url: str, name: str) -> dict[str, str]:
    """{instance name: state} of the box's instances that hold it (not terminated)."""
    return {tags(i)["gpubox:box"]: i["State"]["Name"] for i in live(url)
            if (tags(i).get("gpubox:cluster") or tags(i)["gpubox:box"]) == name}


def left_of(url: str, name: str) -> list[str]:
    client = ec2(url)
    mine = [{"Name": "tag:gpubox:box", "Values": [name]}]
    found = [f"instance {n} {s}" for n, s in aws_view(url, name).items()]
    found += [g["GroupId"] for g in client.describe_security_groups(Filters=mine)["SecurityGroups"]]
    found += [k["KeyName"] for k in client.describe_key_pairs(Filters=mine)["KeyPairs"]]
    found += [g["GroupName"] for g in client.describe_placement_groups()["PlacementGroups"]
              if g["GroupName"] == f"gpubox-{name}"]
    return found


def check_seen_from_an_empty_home(url: str, name: str, home: str) -> None:
    """What AWS holds and bills == what status --refresh and cost say, from a new HOME."""
    held = {n: s for n, s in aws_view(url, name).items() if s != "shutting-down"}
    status = run("status", "--json", "--refresh", home=home)
    assert status.returncode == 0, status.stderr
    shown = {b["name"]: b["state"] for b in json.loads(status.stdout)
             if (b.get("extra", {}).get("cluster") or b["name"]) == name}
    assert shown == held, (shown, held)
    cost = run("cost", "--json", home=home)
    assert cost.returncode == 0, cost.stderr
    rows = [b for b in json.loads(cost.stdout)["boxes"] if b["name"] == name]
    nodes = [n for r in rows for n in (r["node_costs"] or [r])]
    billing = sum(n["per_hour"] + n["address_per_hour"] for n in nodes
                  if n["state"] == "running")
    running = sum(s == "running" for s in held.values())
    assert billing == pytest.approx(running * PER_HOUR), (rows, held)


def one_run(endpoint: str, number: int, tmp_path) -> None:
    """Run `number` of the property, with a random source of its own (the seed and its
    number: any run replays alone) and a HOME of its own."""
    rng = random.Random(f"{SEED}-{number}")
    home = str(tmp_path / f"home-{number}")
    name, nodes = f"p{number}", rng.choice([1, 2, 3])
    up = ["up", name, "--nodes", str(nodes), "--type", "g4dn.xlarge", "--no-setup",
          "--ssh-from", SSH_FROM, "--region", "us-east-1"]
    command = rng.choice(["up", "up", "stop", "start", "down"])
    if command != "up":
        made = run(*up, home=home)
        assert made.returncode == 0, made.stderr
        if command == "start":
            assert run("stop", name, home=home).returncode == 0
    args = {"up": up, "stop": ["stop", name], "start": ["start", name],
            "down": ["down", name, "--yes"]}[command]
    signum = rng.choice([signal.SIGINT, signal.SIGTERM])
    after = rng.uniform(0.3, 4.0)
    where = f"run {number} (seed {SEED}): {command} of {nodes} node(s), " \
            f"{signal.Signals(signum).name} after {after:.2f}s"
    code, err = interrupted(args, after, signum, home=home)
    assert "Traceback" not in err and "internal error" not in err, (where, err)
    finish, undo = printed(err, "finish"), printed(err, "undo")
    if code == 128 + signum:
        assert finish is not None, (where, err)
        follow = undo if undo is not None and rng.random() < 0.5 else finish
    else:  # it ended before the signal: the command as given is its own finish
        assert code == 0, (where, err)
        follow = args
    done = run(*follow, home=home)
    assert done.returncode in (0,) or follow[0] == "down" and "no box called" in done.stderr, (
        where, follow, done.stderr)
    if follow[0] == "down":
        assert left_of(endpoint, name) == [], (where, follow)
    else:
        check_seen_from_an_empty_home(endpoint, name, str(tmp_path / f"empty-{number}"))
    gone = run("down", name, "--yes", home=home)
    assert gone.returncode == 0 or "no box called" in gone.stderr, (where, gone.stderr)
    assert left_of(endpoint, name) == [], (where, "after the final down")


@pytest.mark.slow
@pytest.mark.timeout(60 * RUNS)  # about 10-15 s a run here, several times that under load
def test_any_signal_at_any_moment_then_the_printed_command_leaves_exactly_what_is_shown(
    endpoint, isolation, tmp_path, capsys
):
    """The runs go three at a time (each its own box and HOME, one moto server): most of
    a run is waiting for a signal's moment or for moto, and three at once also try
    gpubox's commands side by side."""
    from concurrent.futures import ThreadPoolExecutor

    with capsys.disabled():
        print(f"\nproperty test: seed {SEED}, {RUNS} runs "
              f"(replay: GPUBOX_PROPERTY_SEED={SEED} GPUBOX_PROPERTY_RUNS={RUNS})")
    with ThreadPoolExecutor(max_workers=3) as pool:
        runs = [pool.submit(one_run, endpoint, number, tmp_path) for number in range(RUNS)]
        for done in runs:
            done.result()  # the first failing run, with its number and the seed
    with capsys.disabled():
        print(f"property test: seed {SEED}, {RUNS} runs passed")
