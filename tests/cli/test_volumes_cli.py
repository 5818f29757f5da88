"""A data volume's life through the real `gpubox` command, as a subprocess, against moto's
server on 127.0.0.1: up --volume, volumes, down keeping it, volume rm (no yes, then yes)."""

from __future__ import annotations

import json

import pytest

from tests.cli import test_aws_subprocess as aws_cli
from tests.cli.test_aws_subprocess import SSH_FROM, ec2_client, gpubox

# The same fixture as the other subprocess tests: a wiped moto world, AWS_ENDPOINT_URL set.
endpoint = aws_cli.endpoint


def data_volumes(url: str) -> list[dict]:
    found = ec2_client(url).describe_volumes(
        Filters=[{"Name": "tag:gpubox:volume", "Values": ["data"]}]
    )
    return found["Volumes"]


@pytest.mark.slow  # five `gpubox` processes, about 20 s on 2 shared cores
def test_a_data_volume_from_up_to_volume_rm(endpoint):
    up = gpubox("up", "b1", "--type", "g4dn.xlarge", "--no-setup", "--ssh-from", SSH_FROM,
                "--volume", "data:30")  # fmt: skip
    assert up.returncode == 0, up.stderr
    assert "volume 'data': 30 GiB in us-east-1" in up.stdout and "/month" in up.stdout
    (vol,) = data_volumes(endpoint)
    assert vol["State"] == "in-use" and vol["Encrypted"]

    listed = gpubox("volumes", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [(v["name"], v["size_gb"], v["box"]) for v in json.loads(listed.stdout)] == [
        ("data", 30, "b1")]  # fmt: skip

    down = gpubox("down", "b1", "--yes")
    assert down.returncode == 0, down.stderr
    assert "kept volume 'data' (30 GiB" in down.stderr
    assert data_volumes(endpoint)[0]["State"] == "available"

    refused = gpubox("volume", "rm", "data")  # stdin is not a terminal, no --yes
    assert refused.returncode == 1 and "nothing was deleted" in refused.stderr
    assert len(data_volumes(endpoint)) == 1

    removed = gpubox("volume", "rm", "data", "--yes")
    assert removed.returncode == 0, removed.stderr
    assert data_volumes(endpoint) == []


# Signals, races and lost state, with the real command (issue 16, item 7) ----------------

UP_ARGS = ("--type", "g4dn.xlarge", "--no-setup", "--ssh-from", SSH_FROM)


def live(url: str, name: str | None = None) -> list[dict]:
    found = ec2_client(url).describe_instances()["Reservations"]
    return [i for r in found for i in r["Instances"]
            if i["State"]["Name"] not in ("terminated", "shutting-down")
            and (name is None or {t["Key"]: t["Value"] for t in i.get("Tags", [])}.get(
                "gpubox:box") == name)]  # fmt: skip


def ever_launched(url: str, name: str) -> int:
    found = ec2_client(url).describe_instances(
        Filters=[{"Name": "tag:gpubox:box", "Values": [name]}])["Reservations"]  # fmt: skip
    return sum(len(r["Instances"]) for r in found)


def untagged_volumes_of_size(url: str, size: int) -> list[dict]:
    return [v for v in ec2_client(url).describe_volumes()["Volumes"] if v["Size"] == size]


def home_env(tmp_path, name: str) -> dict[str, str]:
    import os

    from gpubox.state import State

    State(tmp_path / name / "data" / "state.sqlite").close()  # the cloud side is under test
    return {**os.environ, "GPUBOX_HOME": str(tmp_path / name), "COLUMNS": "200"}


def start(*args: str, env: dict[str, str] | None = None):
    import os
    import subprocess
    import sys

    return subprocess.Popen(
        [sys.executable, "-m", "gpubox", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL, text=True, env=env or {**os.environ, "COLUMNS": "200"},
    )  # fmt: skip


@pytest.fixture
def together(monkeypatch):
    """together(Class, "method", n, when): the moto method works, then waits (up to 20 s)
    until n calls have got that far, so n commands are past the same step at once."""
    import threading

    def install(cls, method: str, n: int, when=lambda *a, **k: True):
        real = getattr(cls, method)
        barrier = threading.Barrier(n, timeout=20)

        def held(self, *args, **kwargs):
            result = real(self, *args, **kwargs)
            if when(*args, **kwargs):
                try:
                    barrier.wait()
                except threading.BrokenBarrierError:
                    pass
            return result

        monkeypatch.setattr(cls, method, held)

    return install


@pytest.fixture
def volume_in_use_refused(monkeypatch):
    """Real EC2 refuses to attach a volume that is attached (VolumeInUse); moto attaches it
    again. The test gives moto's backend that one rule of AWS."""
    from moto.ec2.exceptions import VolumeInUseError
    from moto.ec2.models import EC2Backend

    real = EC2Backend.attach_volume

    def attach_volume(self, volume_id, instance_id, device_path, delete_on_termination=False):
        vol = self.get_volume(volume_id)
        if vol.attachment is not None:
            raise VolumeInUseError(volume_id, vol.attachment.instance.id)
        return real(self, volume_id, instance_id, device_path, delete_on_termination)

    monkeypatch.setattr(EC2Backend, "attach_volume", attach_volume)


@pytest.fixture
def volume_client_token(monkeypatch):
    """Real EC2 answers a CreateVolume whose ClientToken it has seen with the same volume
    (or IdempotentParameterMismatch when the zone, size or tags differ); moto ignores the
    token. The test gives moto's CreateVolume that rule of AWS."""
    import threading

    from moto.core.responses import ActionResult
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.responses.elastic_block_store import ElasticBlockStore

    real = ElasticBlockStore.create_volume
    seen: dict[str, tuple[tuple, str]] = {}
    lock = threading.Lock()

    def create_volume(self):
        token = self._get_param("ClientToken")
        asked = (self._get_param("AvailabilityZone"), self._get_param("Size"),
                 self._get_param("SnapshotId"))  # fmt: skip
        with lock:
            if token in seen:
                if seen[token][0] != asked:
                    raise EC2ClientError("IdempotentParameterMismatch",
                                         "the token was used with other parameters")
                return ActionResult(self.ec2_backend.get_volume(seen[token][1]))
            answer = real(self)
            if token:
                seen[token] = (asked, answer.result.id)
            return answer

    monkeypatch.setattr(ElasticBlockStore, "create_volume", create_volume)


@pytest.mark.slow  # two `gpubox up` at once, about 15 s
def test_two_up_asking_for_the_same_new_volume_at_once_end_with_one_volume(
    endpoint, tmp_path, together, volume_in_use_refused, volume_client_token
):
    """Two laptops (two HOMEs), boxes s1 and s2, both asking for the new volume `data`;
    both are held after RunInstances until both have launched, so both checked first
    that no volume `data` exists. One volume is left, attached to one box; the other
    command says why it failed, and the box it made is terminated."""
    from moto.ec2.models import EC2Backend

    together(EC2Backend, "run_instances", 2)
    runs = [start("up", name, *UP_ARGS, "--volume", "data:20", env=home_env(tmp_path, name))
            for name in ("s1", "s2")]  # fmt: skip
    outcomes = [(run.wait(timeout=240), run.communicate()[1]) for run in runs]
    for code, err in outcomes:  # what each user saw, with -s
        print(code, "\n".join(line for line in err.splitlines() if "volume" in line))
    (vol,) = data_volumes(endpoint)
    assert vol["State"] == "in-use", outcomes
    holder = vol["Attachments"][0]["InstanceId"]
    assert [i["InstanceId"] for i in live(endpoint)] == [holder], outcomes
    assert sorted(code for code, _ in outcomes) == [0, 1], outcomes
    (failed,) = [err for code, err in outcomes if code == 1]
    assert "made by this command, is terminated: nothing of it bills" in failed, failed
    assert "Traceback" not in failed and "internal error" not in failed


@pytest.mark.slow
@pytest.mark.parametrize("laptops", [1, 2])
def test_two_up_asking_for_the_same_existing_volume_leave_one_box(
    endpoint, tmp_path, together, volume_in_use_refused, laptops
):
    """One laptop (two terminals): the second waits on the volume's lock, then refuses
    before it launches anything. Two laptops: both launch (held until both have), one
    attach loses, and the box that command made is terminated: nothing of it bills."""
    from moto.ec2.models import EC2Backend

    from gpubox.providers.aws.volumes import volume_tags

    ec2_client(endpoint).create_volume(
        AvailabilityZone="us-east-1a", Size=20, VolumeType="gp3", Encrypted=True,
        TagSpecifications=[{"ResourceType": "volume", "Tags": volume_tags("data", "arn:x")}])
    if laptops == 2:
        together(EC2Backend, "run_instances", 2)
    envs = [home_env(tmp_path, "home") for _ in range(2)] if laptops == 1 else [
        home_env(tmp_path, name) for name in ("s1", "s2")]  # fmt: skip
    runs = [start("up", name, *UP_ARGS, "--volume", "data", env=env)
            for name, env in zip(("s1", "s2"), envs, strict=True)]  # fmt: skip
    outcomes = [(run.wait(timeout=240), run.communicate()[1]) for run in runs]
    (vol,) = data_volumes(endpoint)
    holder = vol["Attachments"][0]["InstanceId"]
    assert [i["InstanceId"] for i in live(endpoint)] == [holder], outcomes
    assert sorted(code for code, _ in outcomes) == [0, 1], outcomes
    (failed,) = [err for code, err in outcomes if code == 1]
    assert "attached to box 's" in failed and "Traceback" not in failed, failed
    if laptops == 1:  # refused before any launch: the loser never made an instance
        assert ever_launched(endpoint, "s1") + ever_launched(endpoint, "s2") == 1, outcomes
        assert "made by this command" not in failed
    else:
        assert "made by this command, is terminated: nothing of it bills" in failed, failed


def run_as_printed(line: str, env: dict[str, str] | None = None):
    """The undo or finish line the command printed, run by a shell exactly as printed."""
    import os
    import subprocess

    return subprocess.run(["bash", "-c", line], capture_output=True, text=True, timeout=180,
                          stdin=subprocess.DEVNULL, env={**(env or os.environ), "COLUMNS": "200"})


def printed(err: str, label: str) -> str:
    (line,) = [ln.split(label, 1)[1].strip() for ln in err.splitlines() if label in ln]
    return line


@pytest.mark.slow  # about 10 s a row
@pytest.mark.parametrize(("method", "signum", "then"), [
    ("create_volume", "SIGINT", "undo"),
    ("create_volume", "SIGTERM", "finish"),
    ("attach_volume", "SIGTERM", "undo"),
    ("attach_volume", "SIGINT", "finish"),
    ("describe_volumes", "SIGINT", "undo"),  # made, not attached yet
])  # fmt: skip
def test_a_signal_during_up_volume_names_the_volume_and_the_printed_commands_work(
    endpoint, isolation, method, signum, then
):
    """CreateVolume (or AttachVolume) done in moto, its answer held: the signal lands.
    The message names the new volume (with its $/month once its id is known) and the
    undo that removes it; the printed undo, run as printed, leaves nothing tagged and no
    volume; the printed finish leaves one box with the volume attached."""
    import signal
    import threading
    import time

    from moto.ec2.models import EC2Backend

    release, held = threading.Event(), threading.Event()
    real = getattr(EC2Backend, method)

    def slowed(self, *args, **kwargs):
        result = real(self, *args, **kwargs)
        if method == "describe_volumes":  # the first look at the new volume, not attached yet
            if [v for v in result if v.size == 20 and v.attachment is None] and not held.is_set():
                held.set()
                release.wait(30)
        elif int(kwargs.get("size") or 20) == 20:  # the data volume, not the 64 GB root disk
            release.wait(30)
        return result

    mp = pytest.MonkeyPatch()
    mp.setattr(EC2Backend, method, slowed)
    try:
        proc = start("up", "b1", *UP_ARGS, "--volume", "data:20")
        deadline = time.monotonic() + 60
        reached = {
            "create_volume": lambda: untagged_volumes_of_size(endpoint, 20),
            "attach_volume": lambda: [v for v in data_volumes(endpoint) if v["Attachments"]],
            "describe_volumes": held.is_set,
        }[method]
        while proc.poll() is None and not reached():
            assert time.monotonic() < deadline, "never reached"
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(getattr(signal, signum))
        _, err = proc.communicate(timeout=60)
    finally:
        release.set()
        mp.undo()
    print(err)  # what the user saw, with -s
    assert proc.returncode == {"SIGINT": 130, "SIGTERM": 143}[signum], err
    assert f"interrupted by {signum}" in err and "Traceback" not in err, err
    assert "gpubox volume rm data --yes" in printed(err, "undo it:"), err
    if method != "create_volume":
        assert "volume vol-" in err and "$1.60/month" in err, err  # 20 GiB gp3
    else:
        assert "creating volume 'data'" in err and "may exist (and bill)" in err, err
    time.sleep(0.5)  # moto tags the held volume once its answer is let go
    done = run_as_printed(printed(err, then + " it:"))
    assert done.returncode == 0, done.stderr
    if then == "undo":
        assert live(endpoint) == [] and data_volumes(endpoint) == []
        assert untagged_volumes_of_size(endpoint, 20) == []
    else:
        (inst,) = live(endpoint, "b1")
        (vol,) = data_volumes(endpoint)
        assert vol["Attachments"][0]["InstanceId"] == inst["InstanceId"]


@pytest.mark.slow  # four `gpubox` runs, one of them in us-west-2
def test_a_new_home_lists_costs_and_removes_a_volume_made_elsewhere_in_another_region(
    endpoint, tmp_path
):
    """The volume is made by `up --region us-west-2` from one HOME and kept by `down`; a
    new HOME, with no `aws_regions` setting (every region moto's DescribeRegions gives is
    asked), lists it, counts it in `cost` and removes it with `volume rm`."""
    import boto3

    from tests.providers.aws.moto_seed import seed_images

    seed_images("us-west-2")
    first = home_env(tmp_path, "first")
    made = gpubox("up", "w1", *UP_ARGS, "--region", "us-west-2", "--volume", "data:10", env=first)
    assert made.returncode == 0, made.stderr
    assert gpubox("down", "w1", "--yes", env=first).returncode == 0
    west = boto3.client("ec2", region_name="us-west-2", endpoint_url=endpoint)
    (vol,) = west.describe_volumes(Filters=[{"Name": "tag:gpubox:volume", "Values": ["data"]}])[
        "Volumes"]  # fmt: skip

    other = home_env(tmp_path, "new-laptop")
    other.pop("GPUBOX_AWS_REGIONS", None)
    listed = gpubox("volumes", "--json", env=other)
    assert listed.returncode == 0, listed.stderr
    assert [(v["name"], v["id"], v["region"]) for v in json.loads(listed.stdout)] == [
        ("data", vol["VolumeId"], "us-west-2")]  # fmt: skip
    cost = gpubox("cost", "--json", "--refresh", env=other)
    assert cost.returncode == 0, cost.stderr
    assert json.loads(cost.stdout)["volumes_per_month"] == pytest.approx(10 * 0.08)
    removed = gpubox("volume", "rm", "data", "--yes", env=other)
    assert removed.returncode == 0, removed.stderr
    assert [v for v in west.describe_volumes()["Volumes"] if v["VolumeId"] == vol["VolumeId"]] == []
