"""Signals sent for real to the real `gpubox` command (a subprocess) against moto's server.

Each row of the table slows one moto backend method in this process (the server thread
shares moto's backends with the test): the method does its work, then sleeps before
answering, so the command is caught just after AWS made something and before it heard
so. The test waits for that resource to appear in moto, sends the signal, and checks
what the command said, what moto holds, and that running the same command again ends
with exactly one box (or nothing) and no tagged leftovers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.cli.test_aws_subprocess import SSH_FROM, ec2_client, gpubox, live_instances
from tests.providers.aws.moto_seed import seed_images

UP = ("up", "box1", "--type", "g4dn.xlarge", "--no-setup", "--ssh-from", SSH_FROM)
DOWN = ("down", "box1", "--yes")
IMAGE = ("image", "box1", "--as", "snap1")
STOP = ("stop", "box1")
START = ("start", "box1")


@pytest.fixture
def endpoint(moto_server, isolation, monkeypatch):
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST"))
    seed_images("us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    return moto_server


@pytest.fixture
def slow(monkeypatch):
    """slow(Class, "method", when=...): the moto method works, then sleeps before it
    answers, so a signal lands after the work is done. Returns `undo`, which lets the
    waiting answer go and puts the real method back (for the re-run)."""
    releases: list[threading.Event] = []

    def install(cls, method: str, when=lambda *a, **k: True):
        real = getattr(cls, method)
        release = threading.Event()
        releases.append(release)

        def slowed(self, *args, **kwargs):
            result = real(self, *args, **kwargs)
            if when(*args, **kwargs) and not release.is_set():
                release.wait(30)
            return result

        monkeypatch.setattr(cls, method, slowed)

        def undo() -> None:
            release.set()
            monkeypatch.setattr(cls, method, real)

        return undo

    yield install
    for release in releases:
        release.set()


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "gpubox", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL, text=True, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip


def wait_until(check, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the step was never reached"
        time.sleep(0.05)


def tagged_leftovers(endpoint: str) -> list[str]:
    ec2 = ec2_client(endpoint)
    tagged = [{"Name": "tag-key", "Values": ["gpubox:box"]}]
    found = [g["GroupId"] for g in ec2.describe_security_groups(Filters=tagged)["SecurityGroups"]]
    found += [k["KeyName"] for k in ec2.describe_key_pairs(Filters=tagged)["KeyPairs"]]
    found += [i["InstanceId"] for i in live_instances(endpoint)]
    found += [i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]]
    return found


def key_pairs(endpoint: str) -> list[str]:
    return [k["KeyName"] for k in ec2_client(endpoint).describe_key_pairs()["KeyPairs"]]


def images(endpoint: str) -> list[str]:
    return [i["ImageId"] for i in ec2_client(endpoint).describe_images(Owners=["self"])["Images"]]


def _backend(name: str):
    from moto.ec2.models import EC2Backend

    return EC2Backend, name


# (command, slowed moto method, "it happened" check, signal, what the message must name,
#  the re-run, and the end state: "one box" or "nothing")
CASES = [
    pytest.param(UP, "create_key_pair", lambda e: key_pairs(e), signal.SIGINT,
                 ["creating key pair gpubox-box1"], UP, "one box", id="up-keypair-SIGINT"),
    pytest.param(UP, "run_instances", lambda e: live_instances(e), signal.SIGTERM,
                 ["launching g4dn.xlarge", "security group sg-", "key pair gpubox-box1",
                  "may exist (and bill)",
                  "finish it:  gpubox up box1", "undo it:    gpubox down box1 --yes"],
                 UP, "one box", id="up-launch-SIGTERM"),
    pytest.param(UP, "run_instances", lambda e: live_instances(e), signal.SIGKILL,
                 [], DOWN, "nothing", id="up-launch-SIGKILL-then-down"),
    pytest.param(DOWN, "terminate_instances", lambda e: not live_instances(e), signal.SIGINT,
                 # AWS shows the instance terminated already: its group and key pair are told
                 ["security group sg-", "key pair gpubox-box1",
                  "finish it:  gpubox down box1 --yes"],
                 DOWN, "nothing", id="down-terminate-SIGINT"),
    pytest.param(DOWN, "terminate_instances", lambda e: not live_instances(e), signal.SIGKILL,
                 [], DOWN, "nothing", id="down-terminate-SIGKILL"),
    pytest.param(STOP, "stop_instances",
                 lambda e: [i for i in live_instances(e) if i["State"]["Name"] == "stopped"],
                 signal.SIGINT, ["instance i-", "$5.12/month disk - box 'box1', g4dn.xlarge",
                                 "finish it:  gpubox stop box1"],
                 STOP, "one box", id="stop-SIGINT"),
    pytest.param(START, "start_instances",
                 lambda e: [i for i in live_instances(e) if i["State"]["Name"] == "running"],
                 signal.SIGTERM, ["instance i-", "$0.531/h", "starting",
                                  "finish it:  gpubox start box1", "undo it:    gpubox stop box1"],
                 START, "one box", id="start-SIGTERM"),
    pytest.param(IMAGE, "describe_images", lambda e: images(e), signal.SIGTERM,
                 ["waiting for image ami-", "nothing is left of what it made",
                  "undo it:    gpubox image rm snap1 --yes"],
                 IMAGE, "one box", id="image-wait-SIGTERM"),
]


@pytest.mark.slow  # about 10 s a row: two or three real `gpubox` runs against moto's server
@pytest.mark.parametrize("command, method, reached, signum, told, rerun, end", CASES)
def test_a_signal_at_each_step_is_told_and_a_rerun_converges(
    endpoint, slow, isolation, command, method, reached, signum, told, rerun, end
):
    if command != UP:  # down and image work on a box that exists
        made = gpubox(*UP)
        assert made.returncode == 0, made.stderr
    if command == START:
        assert gpubox(*STOP).returncode == 0
    cls, name = _backend(method)
    # describe_images is slowed only for the wait on one image (not for `up`'s image lookup)
    undo = slow(cls, name, when=(lambda *a, **k: bool(k.get("ami_ids"))) if method == "describe_images"
         else (lambda *a, **k: True))  # fmt: skip
    proc = start(*command)
    try:
        wait_until(lambda: proc.poll() is not None or reached(endpoint))
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    expected = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGKILL: -9}[signum]
    assert proc.returncode == expected, err
    assert "Traceback" not in err and "internal error" not in err
    if signum != signal.SIGKILL:
        assert f"interrupted by {signal.Signals(signum).name}" in err, err
        for text in told:
            assert text in err, err
    undo()
    again = gpubox(*rerun)
    assert again.returncode == 0, again.stderr
    if end == "one box":
        (inst,) = live_instances(endpoint)
        assert {t["Key"]: t["Value"] for t in inst["Tags"]}["gpubox:box"] == "box1"
        assert (isolation / "data" / "keys" / "box1.pem").exists()
        assert key_pairs(endpoint) == ["gpubox-box1"]
        if command == IMAGE:
            assert len(images(endpoint)) == 1
        if command == STOP:
            assert inst["State"]["Name"] == "stopped"
        if command == START:
            assert inst["State"]["Name"] == "running"
    else:
        assert tagged_leftovers(endpoint) == []
        assert not (isolation / "data" / "keys" / "box1.pem").exists()
        config = isolation / "data" / "ssh_config"
        assert "box1" not in (config.read_text() if config.exists() else "")


@pytest.mark.slow
def test_gc_removes_the_local_key_file_of_a_key_pair_it_deletes(endpoint, isolation):
    assert gpubox(*UP).returncode == 0
    key_file = isolation / "data" / "keys" / "box1.pem"
    assert key_file.exists()
    (inst,) = live_instances(endpoint)
    ec2_client(endpoint).terminate_instances(InstanceIds=[inst["InstanceId"]])  # the console
    assert gpubox("status", "--refresh").returncode == 0  # the cache lets box1 go
    gc = gpubox("gc", "--yes")
    assert gc.returncode == 0, gc.stderr
    assert key_pairs(endpoint) == []
    assert not key_file.exists()
    assert "removed the key file" in gc.stderr


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then let go)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Rows of the table after the launch: `up` with setup, its SSH pointed (the documented
# ssh_address setting) at a closed loopback port, so it keeps waiting for SSH.
SSH_WAIT = [
    pytest.param(signal.SIGINT, "waiting for SSH on 127.0.0.1:", id="up-ssh-wait-SIGINT"),
]


@pytest.mark.parametrize("signum, step", SSH_WAIT)
def test_a_signal_while_up_waits_for_ssh_names_the_box_its_cost_and_both_commands(
    endpoint, isolation, monkeypatch, signum, step
):
    monkeypatch.setenv("GPUBOX_SSH_ADDRESS", f"127.0.0.1:{closed_port()}")
    proc = start("up", "box1", "--type", "g4dn.xlarge", "--ssh-from", SSH_FROM, "--no-browser")
    said: list[str] = []
    reader = threading.Thread(target=lambda: said.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        wait_until(lambda: proc.poll() is not None or any("does not answer yet" in s for s in said))
        assert proc.poll() is None, "".join(said)
        proc.send_signal(signum)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(timeout=10)
    proc.stdout.close()
    err = "".join(said)
    assert proc.returncode == {signal.SIGINT: 130, signal.SIGTERM: 143}[signum], err
    assert "Traceback" not in err and "internal error" not in err
    assert f"interrupted by {signal.Signals(signum).name} while {step}" in err, err
    (inst,) = live_instances(endpoint)
    for text in [f"instance {inst['InstanceId']} (us-east-1): $0.531/h",  # with its address
                 "box 'box1', g4dn.xlarge, running", "it costs $0.53/h while it runs",
                 "finish it:  gpubox up box1 --type g4dn.xlarge", "undo it:    gpubox down box1 --yes"]:  # fmt: skip
        assert text in err, err
    again = gpubox(*UP)  # continues on the same box (without setup: SSH is still closed)
    assert again.returncode == 0, again.stderr
    assert "found box 'box1'" in again.stderr, again.stderr
    assert [i["InstanceId"] for i in live_instances(endpoint)] == [inst["InstanceId"]]


@pytest.mark.slow
def test_sigterm_during_bench_types_says_what_it_left_and_exits_143(endpoint, isolation):
    """The boxes wait for SSH (moto's addresses answer nothing) when SIGTERM comes: every
    one is terminated, the message says nothing is left and prints no undo for them."""
    env = {**os.environ, "COLUMNS": "200", "GPUBOX_SSH_FROM": SSH_FROM}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpubox", "bench", "--types", "g4dn.xlarge,g5.xlarge", "--yes",
         "--region", "us-east-1", "--quick"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        env=env,
    )  # fmt: skip
    try:
        wait_until(lambda: proc.poll() is not None or len(live_instances(endpoint)) == 2, 60)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert "interrupted by SIGTERM" in err and "Traceback" not in err
    assert "nothing is left of what it made" in err, err
    assert "undo it" not in err, err
    assert live_instances(endpoint) == []
