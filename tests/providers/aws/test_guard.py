"""The guard from boot: a launched box's EC2 user data is the idle agent's installer.

moto keeps the user data run_instances was given; DescribeInstanceAttribute reads it
back, as on AWS. The script then runs here in a scratch root (GPUBOX_GUARD_ROOT stands
for /), with `systemctl` replaced by a stub that records its arguments: no systemd
runs on this machine, so that one part cannot be real.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import shutil
import subprocess

import pytest

from gpubox import guard
from gpubox.providers.base import BoxSpec
from tests.providers.aws.conftest import plain_region

AGENT_FILES = guard.agent_files()


@pytest.fixture
def launched(aws, settings, ec2):
    """A box launched with an idle limit, an uptime cap and a pre_stop; its user data."""
    from gpubox.providers.aws import AwsProvider

    chosen = settings.with_overrides(max_hours=8.0, pre_stop="git -C ~/work push")
    prov = AwsProvider(chosen, region_chooser=plain_region)
    prov.wait_delay = 0.01
    try:
        box = prov.launch(BoxSpec(name="g1", provider="aws", type="g4dn.xlarge",
                                  ssh_from="203.0.113.7/32", idle_stop_minutes=45))  # fmt: skip
    finally:
        prov.state.close()
    answer = ec2.describe_instance_attribute(InstanceId=box.id, Attribute="userData")
    sent = base64.b64decode(answer["UserData"]["Value"])
    return {"box": box, "sent": sent, "settings": chosen}


def test_the_user_data_of_a_launched_box_is_its_guard_and_fits(launched, tmp_path):
    sent = launched["sent"]
    assert len(sent) < guard.MAX_USER_DATA  # EC2's 16 KB, on the bytes sent
    script = gzip.decompress(sent).decode()  # cloud-init unzips gzipped user data
    assert script.startswith("#!/bin/bash\n")
    path = tmp_path / "user-data.sh"
    path.write_text(script)
    checked = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    assert "GPUBOX_IDLE_MINUTES=45\n" in script and "GPUBOX_MAX_HOURS=8\n" in script
    # No secret: not the box's private key, not the AWS credentials.
    keys = list(launched["settings"].keys_dir.glob("*"))
    assert keys, "the launch made a key pair"
    for key in keys:
        material = key.read_text().strip() if key.is_file() else ""
        if material:  # the key files, not the empty lock files beside them
            assert material[-200:] not in script
    assert "PRIVATE KEY" not in script and os.environ["AWS_SECRET_ACCESS_KEY"] + "\n" not in script


@pytest.mark.skipif(shutil.which("python3") is None, reason="the guard runs the box's python3")
def test_running_the_user_data_in_a_scratch_root_installs_the_agent_with_the_limits(
    launched, tmp_path
):
    root = tmp_path / "root"
    stub_bin = tmp_path / "bin"
    stub_bin.mkdir()
    calls = tmp_path / "systemctl-calls"
    stub = stub_bin / "systemctl"
    stub.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')  # a stub: no systemd runs here
    stub.chmod(0o755)
    script = tmp_path / "user-data.sh"
    script.write_bytes(gzip.decompress(launched["sent"]))
    env = {"PATH": f"{stub_bin}:/usr/bin:/bin", "GPUBOX_GUARD_ROOT": str(root),
           "HOME": str(tmp_path)}  # fmt: skip
    ran = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert ran.returncode == 0, ran.stdout + ran.stderr

    home = root / "home" / "ubuntu" / ".gpubox"
    for name, text in AGENT_FILES.items():
        assert (home / "agent" / name).read_text() == text
    config = json.loads((home / "state" / "idle-config.json").read_text())
    assert config["idle_minutes"] == 45 and config["enabled"] is True
    assert config["max_hours"] == 8 and config["pre_stop"] == "git -C ~/work push"
    assert config["box_name"] == "g1" and config["mode"] == "systemd"
    service = (root / "etc/systemd/system/gpubox-idle.service").read_text()
    assert "User=ubuntu\n" in service
    assert f"{home}/agent/idle.py check" in service
    assert "OnUnitActiveSec=60s" in (root / "etc/systemd/system/gpubox-idle.timer").read_text()
    assert calls.read_text().splitlines() == ["daemon-reload", "enable --now gpubox-idle.timer"]
    assert "idle auto-stop after 45m" in (home / "logs" / "guard.log").read_text()

    # The agent it installed answers `status` with the box's limits.
    status = subprocess.run(
        ["python3", str(home / "agent" / "idle.py"), "status"],
        env={**env, "GPUBOX_AGENT_HOME": str(home)}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert status.returncode == 0, status.stderr
    seen = json.loads(status.stdout)
    assert seen["enabled"] and seen["idle_minutes"] == 45 and seen["max_hours"] == 8
    assert seen["health"]["running"] is True  # the stub says the timer is active


def test_only_a_custom_ami_gets_the_cloud_init_note():
    assert guard.cloud_init_note(None) is None
    assert guard.cloud_init_note("dlami") is None and guard.cloud_init_note("my-saved") is None
    assert "comes with the setup step" in guard.cloud_init_note("ami-0123456789abcdef0")


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_the_guard_script_and_the_user_data_pass_shellcheck(tmp_path):
    from importlib import resources

    from gpubox import config

    built = guard.user_data(config.load(), BoxSpec(name="g1", provider="aws"))
    whole = tmp_path / "user-data.sh"
    whole.write_bytes(gzip.decompress(built))
    with resources.as_file(resources.files("gpubox") / "remote/scripts/guard.sh") as script:
        for path in (script, whole):
            out = subprocess.run(["shellcheck", "-S", "warning", str(path)],
                                 capture_output=True, text=True)  # fmt: skip
            assert out.returncode == 0, out.stdout


def test_up_flags_reach_the_guard_and_up_says_what_guards_the_box(aws, ec2, capsys, monkeypatch):
    from gpubox.cli.main import run

    monkeypatch.setenv("COLUMNS", "200")
    own_ami = aws["us-east-1"][("ubuntu", "x86_64")]

    def gpubox(*args):
        try:
            run(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code or 0
        out = capsys.readouterr()
        return code, out.out, out.err

    code, _, err = gpubox("up", "b0", "--type", "g4dn.xlarge", "--region", "us-east-1",
                          "--ssh-from", "203.0.113.7/32", "--no-setup", "--max-hours", "0")  # fmt: skip
    assert code == 2 and "off" in err
    assert ec2.describe_instances()["Reservations"] == []  # a bad cap makes nothing

    code, out, err = gpubox("up", "b1", "--type", "g4dn.xlarge", "--region", "us-east-1",
                            "--ssh-from", "203.0.113.7/32", "--no-setup", "--idle-stop", "30m",
                            "--max-hours", "8", "--pre-stop", "git -C ~/work push",
                            "--image", own_ami)  # fmt: skip
    assert code == 0, err
    assert "stops itself after 30m idle or 8h up (its guard was installed at first boot)" in out
    assert f"if {own_ami} has no cloud-init" in err and "comes with the setup step" in err
    [reservation] = ec2.describe_instances()["Reservations"]
    box_id = reservation["Instances"][0]["InstanceId"]
    sent = ec2.describe_instance_attribute(InstanceId=box_id, Attribute="userData")
    script = gzip.decompress(base64.b64decode(sent["UserData"]["Value"])).decode()
    assert "GPUBOX_IDLE_MINUTES=30\n" in script and "GPUBOX_MAX_HOURS=8\n" in script
    assert "GPUBOX_PRE_STOP='git -C ~/work push'\n" in script


@pytest.mark.sshd
@pytest.mark.skipif(not os.path.exists("/usr/sbin/sshd"), reason="needs Debian's openssh-server")
def test_an_up_that_fails_after_the_launch_says_the_box_bills_and_what_stops_it(
    aws, ec2, capsys, monkeypatch, sshd
):
    """The box's SSH is a real sshd (the documented ssh_address setting) that does not let
    the box's new key in: `up` fails after the launch, as when the laptop cannot reach
    the box, and must say that the box runs, bills, and stops by its guard."""
    from gpubox.cli.main import run

    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("GPUBOX_SSH_ADDRESS", f"127.0.0.1:{sshd.port}")
    try:
        run(["up", "b2", "--type", "g4dn.xlarge", "--region", "us-east-1", "--ssh-from",
             "203.0.113.7/32", "--idle-stop", "45m", "--max-hours", "10", "--no-browser"])  # fmt: skip
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    err = capsys.readouterr().err
    assert code != 0
    [reservation] = ec2.describe_instances()["Reservations"]
    assert reservation["Instances"][0]["State"]["Name"] == "running"
    assert "'b2' is running and billing: its guard (installed at first boot) stops it after " \
           "45m idle or 10h up; to stop it now: gpubox stop b2" in " ".join(err.split())
