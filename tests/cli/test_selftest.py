"""`gpubox selftest`, the real command as a subprocess against moto's server.

moto never boots a machine or runs its user data, so the guard cannot install itself
nor stop the instance. The test plays that part, in this process (which the
ThreadedMotoServer shares): once the instance runs it writes the line guard.sh prints to
the console (moto's GetConsoleOutput returns a fixed boot log, patched here), and then it
stops the instance in moto's backend with the reason EC2 gives an OS shutdown
(Client.InstanceInitiatedShutdown), where the guard's own shutdown would. Everything
else is real: the plan, the launch with the real guard user data, the watch, the
removal and the check by tag. Real signals cut the command at several points; a re-run
removes what it left.
"""

from __future__ import annotations

import base64
import functools
import gzip
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from gpubox.selftest import GUARD_MARKER, SELFTEST_BOX
from tests.cli.test_aws_subprocess import endpoint, gpubox  # noqa: F401
from tests.cli.test_interrupts import slow  # noqa: F401 - the fixture
from tests.cli.test_interrupts import wait_until as wait_until_in
from tests.providers.aws.moto_seed import ACCOUNT

REGION = ("--region", "us-east-1")
# Quick looks; and a deadline that ends a test whose guard play went wrong within a minute.
FAST = ("--poll-seconds", "0.1", "--deadline-minutes", "1")


def backend():
    from moto.ec2.models import ec2_backends

    return ec2_backends[ACCOUNT]["us-east-1"]


def selftest_instances() -> list:
    ec2 = backend()
    return [i for i in ec2.all_instances()
            if ec2.tags.get(i.id, {}).get("gpubox:box") == SELFTEST_BOX]


class Guard:
    """Plays the guard moto cannot run: its console line, then its OS shutdown."""

    def __init__(self, monkeypatch, stop: bool = True, ignore: tuple[str, ...] = ()) -> None:
        self.monkeypatch, self.stop, self.ignore = monkeypatch, stop, ignore
        self.user_data: bytes | None = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._play, daemon=True)

    def __enter__(self) -> Guard:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join(10)

    def _play(self) -> None:
        import moto.ec2.responses.general as general
        from moto.ec2.models.instances import StateReason

        while not self.done.is_set():
            running = [i for i in selftest_instances()
                       if i.state == "running" and i.id not in self.ignore]
            if running:
                break
            time.sleep(0.02)
        else:
            return
        inst = running[0]
        self.user_data = gzip.decompress(base64.b64decode(inst.user_data.as_bytes()))
        time.sleep(0.3)  # cloud-init at work
        line = f"{GUARD_MARKER} box={SELFTEST_BOX} idle=1 at={int(time.time())}"
        self.monkeypatch.setattr(general, "SAMPLE_CONSOLE_OUTPUT",
                                 general.SAMPLE_CONSOLE_OUTPUT + f"[  31.4] cloud-init[812]: {line}\n")
        if not self.stop:
            return
        time.sleep(0.5)  # the idle limit
        inst.stop()
        inst.state_reason = StateReason("Client.InstanceInitiatedShutdown: Instance initiated "
                                        "shutdown", "Client.InstanceInitiatedShutdown")


def tagged_left(url: str) -> list[str]:
    """Everything in moto's us-east-1 tagged as the selftest's box that still exists."""
    import boto3

    ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=url)
    mine = [{"Name": "tag:gpubox:box", "Values": [SELFTEST_BOX]}]
    found = [i["InstanceId"] for r in ec2.describe_instances(Filters=mine)["Reservations"]
             for i in r["Instances"] if i["State"]["Name"] != "terminated"]
    found += [v["VolumeId"] for v in ec2.describe_volumes(Filters=mine)["Volumes"]]
    found += [g["GroupId"] for g in ec2.describe_security_groups(Filters=mine)["SecurityGroups"]]
    found += [k["KeyName"] for k in ec2.describe_key_pairs(Filters=mine)["KeyPairs"]]
    return found


def key_file(isolation) -> bool:
    return (isolation / "data" / "keys" / f"{SELFTEST_BOX}.pem").exists()


def test_selftest_sees_the_guard_stop_the_instance_and_leaves_nothing(endpoint, isolation,  # noqa: F811
                                                                     monkeypatch):
    with Guard(monkeypatch) as guard:
        done = gpubox("selftest", *REGION, "--yes", *FAST)
    assert done.returncode == 0, done.stderr
    # What it would launch and cost, said before launching.
    assert "launches one t3a.micro" in done.stderr and "no GPU, no setup" in done.stderr
    assert "at most $0.0" in done.stderr
    # The real guard went in as user data, at a one-minute idle limit and a 15-minute cap.
    assert b"GPUBOX_IDLE_MINUTES=1\n" in guard.user_data
    assert b"GPUBOX_MAX_HOURS=0.25\n" in guard.user_data
    assert GUARD_MARKER.encode() in guard.user_data  # guard.sh prints it on the console
    assert "guard installed (" in done.stderr
    assert "is stopped: Client.InstanceInitiatedShutdown" in done.stderr
    assert re.search(r"boot to guard installed: \d+s; guard installed to stopped by itself: "
                     r"\d+s; cost: about \$0\.0", done.stdout), done.stdout
    assert "by itself (OS shutdown)" in done.stdout and "nothing left" in done.stdout
    assert "the guard stopped an idle instance by itself in us-east-1" in done.stderr
    assert tagged_left(endpoint) == [] and not key_file(isolation)


def test_an_instance_stopped_by_someone_else_is_no_proof(endpoint, isolation, monkeypatch):  # noqa: F811
    """The stop comes through StopInstances (the reason EC2 gives a user's stop)."""
    with Guard(monkeypatch, stop=False):
        run = subprocess.Popen([sys.executable, "-m", "gpubox", "selftest", *REGION, "--yes",
                                *FAST], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_until(lambda: any(i.state == "running" for i in selftest_instances()))
        time.sleep(1.0)
        for inst in selftest_instances():
            inst.stop()
        out, err = run.communicate(timeout=120)
    assert run.returncode == 1, err
    assert "selftest failed: it did not stop by itself" in err
    assert tagged_left(endpoint) == []


def test_a_guard_never_seen_fails_at_the_deadline_and_still_cleans(endpoint, isolation):  # noqa: F811
    done = gpubox("selftest", *REGION, "--yes", "--poll-seconds", "0.1",
                  "--deadline-minutes", "0.05")
    assert done.returncode == 1
    assert "the guard's line never showed on the console" in done.stderr
    assert "not stopped after" in done.stderr
    assert tagged_left(endpoint) == [] and not key_file(isolation)


def test_a_refused_launch_is_one_red_line_and_leaves_nothing(endpoint, isolation,  # noqa: F811
                                                             monkeypatch):
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.responses import EC2Response

    def refuse(self):
        raise EC2ClientError("InsufficientInstanceCapacity",
                             "We currently do not have sufficient t3a.micro capacity.")

    monkeypatch.setattr(EC2Response, "run_instances", refuse)
    done = gpubox("selftest", *REGION, "--yes", *FAST)
    assert done.returncode == 1
    assert "error: launching t3a.micro in us-east-1: We currently do not have" in done.stderr
    assert "Traceback" not in done.stderr
    assert tagged_left(endpoint) == [] and not key_file(isolation)


def test_without_yes_and_without_a_terminal_nothing_is_launched(endpoint):  # noqa: F811
    done = gpubox("selftest", *REGION)
    assert done.returncode != 0 and "nothing was launched" in done.stderr
    assert "gpubox selftest --region us-east-1 --yes" in done.stderr
    assert "Traceback" not in done.stderr
    assert selftest_instances() == [] and tagged_left(endpoint) == []


# Interruptions ----------------------------------------------------------------------------


wait_until = functools.partial(wait_until_in, timeout=60.0)  # a launch waits on moto


class Command:
    """`gpubox ...` running, its stderr read line by line as it comes."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gpubox", *args], stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
            env={**os.environ, "COLUMNS": "200"})  # fmt: skip
        self.err: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.err.append(line)

    def said(self, text: str) -> bool:
        return any(text in line for line in self.err)

    def end(self, signum: int) -> tuple[int, str]:
        self.proc.send_signal(signum)
        self.proc.wait(60)
        self.reader.join(10)
        return self.proc.returncode, "".join(self.err)


# (slowed moto method or None, the moment to send the signal, the signal, what is said)
CASES = [
    pytest.param("create_key_pair", lambda c, url: backend().key_pairs, signal.SIGINT,
                 ["creating key pair gpubox-gpubox-selftest"], id="key-pair-SIGINT"),
    pytest.param("run_instances", lambda c, url: selftest_instances(), signal.SIGTERM,
                 ["while launching t3a.micro in us-east-1", "key pair gpubox-gpubox-selftest",
                  "security group sg-", "may exist (and bill)"], id="launch-SIGTERM"),
    pytest.param(None, lambda c, url: c.said("waiting for its guard's line"), signal.SIGINT,
                 ["while watching i-", "instance i-", "$0.009/h", "its guard stops it within 15 "
                  "minutes"], id="watching-SIGINT"),
    pytest.param("delete_security_group", lambda c, url: not backend().key_pairs or c.said(
        "removing the instance"), signal.SIGTERM,
                 ["removing the security group and key pair"], id="cleanup-SIGTERM"),
]


@pytest.mark.parametrize(("method", "moment", "signum", "says"), CASES)
def test_an_interrupted_selftest_says_what_exists_and_a_rerun_removes_it(
    endpoint, isolation, monkeypatch, slow, method, moment, signum, says  # noqa: F811
):
    from moto.ec2.models import EC2Backend

    undo = slow(EC2Backend, method) if method else (lambda: None)
    with Guard(monkeypatch, stop=method == "delete_security_group"):
        command = Command("selftest", *REGION, "--yes", *FAST)
        wait_until(lambda: moment(command, endpoint))
        if method == "delete_security_group":
            wait_until(lambda: command.said("removing the instance"))
            wait_until(lambda: not [g for g in backend().describe_security_groups()
                                    if g.name == f"gpubox-{SELFTEST_BOX}"])
        code, err = command.end(signum)
    undo()
    assert code == 128 + signum, err
    assert f"interrupted by {signal.Signals(signum).name}" in err
    for text in says:
        assert text in err, err
    assert "undo it:    gpubox selftest --region us-east-1 --clean --yes" in err
    assert "Traceback" not in err

    again = gpubox("selftest", *REGION, "--clean", "--yes", *FAST)
    assert again.returncode == 0, again.stderr
    assert "nothing of a selftest is left in us-east-1" in again.stderr
    assert tagged_left(endpoint) == [] and not key_file(isolation)
    assert all(i.state == "terminated" for i in selftest_instances())


def test_a_rerun_removes_what_an_interrupted_one_left_then_tests(endpoint, isolation,  # noqa: F811
                                                                monkeypatch):
    command = Command("selftest", *REGION, "--yes", *FAST)
    wait_until(lambda: command.said("waiting for its guard's line"))
    code, _ = command.end(signal.SIGINT)
    assert code == 130
    (first,) = selftest_instances()
    with Guard(monkeypatch, ignore=(first.id,)):
        again = gpubox("selftest", *REGION, "--yes", *FAST)
    assert again.returncode == 0, again.stderr
    assert f"first removes what an earlier selftest left: instance {first.id}" in again.stderr
    assert first.state == "terminated"
    assert tagged_left(endpoint) == [] and not key_file(isolation)
