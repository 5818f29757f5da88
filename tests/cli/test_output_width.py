"""Output that survives a pipe: the real `gpubox` command, stdout a pipe, against moto's
server. No table may cut an ID, a name, an address or an amount with "…", whether
COLUMNS is unset (rich's default width, 80) or 80; --json is unchanged."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.cli import test_aws_subprocess
from tests.cli.test_aws_subprocess import SSH_FROM, ec2_client, live_instances

endpoint = test_aws_subprocess.endpoint  # the fixture: a wiped moto world, AWS_ENDPOINT_URL set

LONG = "box-with-a-name-long-enough-to-cut-it"
WIDTHS = [None, "80"]


def gpubox(*args: str, columns: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    if columns:
        env["COLUMNS"] = columns
    return subprocess.run(
        [sys.executable, "-m", "gpubox", *args],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, env=env, timeout=120,
    )  # fmt: skip


@pytest.fixture
def world(endpoint, isolation):
    """A running box with a long name, a leftover volume and security group, a saved image."""
    up = gpubox("up", LONG, "--type", "g4dn.xlarge", "--no-setup", "--ssh-from", SSH_FROM,
                columns="200")  # fmt: skip
    assert up.returncode == 0, up.stderr
    ec2 = ec2_client(endpoint)
    tags = [{"Key": "gpubox:box", "Value": f"{LONG}-gone"}]
    volume = ec2.create_volume(
        AvailabilityZone="us-east-1a", Size=8,
        TagSpecifications=[{"ResourceType": "volume", "Tags": tags}],
    )["VolumeId"]  # fmt: skip
    group = ec2.create_security_group(
        GroupName=f"gpubox-{LONG}-gone", Description="left behind",
        TagSpecifications=[{"ResourceType": "security-group", "Tags": tags}],
    )["GroupId"]  # fmt: skip
    (inst,) = live_instances(endpoint)
    image = ec2.create_image(InstanceId=inst["InstanceId"], Name=f"{LONG}-image")["ImageId"]
    ec2.create_tags(Resources=[image], Tags=[{"Key": "gpubox:image", "Value": f"{LONG}-image"},
                                             {"Key": "gpubox:box", "Value": LONG}])  # fmt: skip
    return {"address": inst["PublicIpAddress"], "volume": volume, "group": group, "image": image}


@pytest.mark.parametrize("columns", WIDTHS)
def test_tables_in_a_pipe_keep_every_id_name_address_and_amount_whole(world, columns):
    status = gpubox("status", columns=columns)
    assert status.returncode == 0, status.stderr
    assert LONG in status.stdout and world["address"] in status.stdout
    assert "$0.53/h" in status.stdout

    cost = gpubox("cost", columns=columns)
    assert cost.returncode == 0, cost.stderr
    assert LONG in cost.stdout

    gc = gpubox("gc", "--region", "us-east-1", columns=columns)
    assert gc.returncode == 0, gc.stderr
    assert world["volume"] in gc.stdout and world["group"] in gc.stdout
    assert f"{LONG}-gone" in gc.stdout

    images = gpubox("images", columns=columns)
    assert images.returncode == 0, images.stderr
    assert f"{LONG}-image" in images.stdout and world["image"] in images.stdout
    assert "available" in images.stdout and "/month" in images.stdout

    for out in (status.stdout, cost.stdout, gc.stdout, images.stdout):
        assert "…" not in out, out


@pytest.mark.parametrize("columns", WIDTHS)
def test_types_in_a_pipe_lists_every_type_and_price_whole(endpoint, columns):
    listed = gpubox("types", "--json", columns=columns)
    assert listed.returncode == 0, listed.stderr
    types = json.loads(listed.stdout)
    table = gpubox("types", columns=columns)
    assert table.returncode == 0, table.stderr
    assert "…" not in table.stdout, table.stdout
    for t in types:
        assert t["name"] in table.stdout
        if t["on_demand"]:
            assert f"${t['on_demand']['value']:,.2f}/h" in table.stdout


def test_json_is_the_same_whatever_the_width(world):
    wide = gpubox("status", "--json", columns="400")
    narrow = gpubox("status", "--json", columns="20")
    assert json.loads(wide.stdout)[0]["name"] == LONG
    assert [b["name"] for b in json.loads(narrow.stdout)] == [LONG]


def _on_terminal(monkeypatch, width: int):
    import io

    from rich.console import Console

    from gpubox.cli import render

    out = io.StringIO()
    terminal = Console(file=out, width=width, force_terminal=True, color_system=None,
                       soft_wrap=True)  # fmt: skip
    monkeypatch.setattr(render, "_console", terminal)  # a terminal `width` columns wide
    return out


def test_on_a_narrow_terminal_a_long_id_is_whole_instead_of_cut(monkeypatch):
    from gpubox.cli import render

    out = _on_terminal(monkeypatch, 12)
    render.table(["id"], [["vol-0123456789abcdef0"]])
    assert "…" not in out.getvalue()
    assert "vol-0123456789abcdef0" in out.getvalue().split()  # one word, not folded


# Words a user copies: none may be split over two lines at 80 columns.
COPIED = ["AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY", "/home/student/.config/gpubox/config.toml",
          "i-0123456789abcdef0", "sg-0fedcba9876543210", "ec2-203-0-113-7.compute-1.amazonaws.com"]


@pytest.mark.parametrize("width", [80, 60, 40])
@pytest.mark.parametrize("shape", ["fits-after-wrapping", "too-wide-for-columns"])
def test_every_table_wraps_between_words_never_inside_one(monkeypatch, width, shape):
    """The renderer every table goes through: a table that fits once its long values
    wrap keeps its columns (each at least its longest word); one whose longest words
    side by side are wider than the terminal is printed as blocks of `column: value`."""
    from gpubox.cli import render

    out = _on_terminal(monkeypatch, width)
    if shape == "fits-after-wrapping":
        rows = [["key files", "loose permissions: box1.pem box2.pem " * 3, "chmod 600 *.pem"],
                ["AWS region", "none configured", "gpubox picks the nearest region with "
                 "your GPU type; or `gpubox config set region us-west-2`"]]  # fmt: skip
    else:
        rows = [["AWS identity", f"not usable: {COPIED[2]} {COPIED[3]}", f"set {COPIED[0]}"],
                ["config file", COPIED[1], f"see {COPIED[4]}"]]
    render.table(["check", "result", "fix"], rows)
    text = out.getvalue()
    shown = text.split()
    for row in rows:
        for value in row:
            for word in value.split():
                assert word in shown, (word, text)
    for line in text.splitlines():
        assert len(line) <= width or len(line.split()) <= 2, line  # only a word too long
    if shape == "fits-after-wrapping" and width == 80:
        assert text.splitlines()[0].split() == ["check", "result", "fix"]  # still a table


def _in_terminal(args: list[str], columns: str | None, cols: int = 80) -> tuple[int, str]:
    """The real command on a pseudo-terminal `cols` wide (COLUMNS unset or set)."""
    import fcntl
    import pty
    import re
    import select
    import struct
    import termios
    import time

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, cols, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env["TERM"] = "xterm"
    if columns:
        env["COLUMNS"] = columns
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_SECURITY_TOKEN"):  # no credentials: doctor says how to set them
        env.pop(name, None)
    proc = subprocess.Popen([sys.executable, "-m", "gpubox", *args], stdin=slave,
                            stdout=slave, stderr=slave, env=env, close_fds=True)  # fmt: skip
    os.close(slave)
    shown = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the command ended and closed the terminal
                break
            if not chunk:
                break
            shown += chunk
        elif proc.poll() is not None:
            break
    os.close(master)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown.decode(errors="replace"))
    return proc.wait(timeout=10), text.replace("\r", "")


@pytest.mark.parametrize("columns", WIDTHS)
def test_doctor_and_status_on_an_80_column_terminal_break_no_word(isolation, columns):
    long_name = "a-box-with-a-name-long-enough-to-wrap"
    made = gpubox("up", long_name, "--provider", "local", "--no-setup", columns="200")
    assert made.returncode == 0, made.stderr
    code, doctor = _in_terminal(["doctor"], columns)
    assert code == 0, doctor
    words = doctor.split()
    assert "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)" in words, doctor
    config_path = str(isolation / "config" / "config.toml")
    assert config_path in words, doctor
    for line in doctor.splitlines():
        assert len(line) <= 80 or config_path in line, line
    code, status = _in_terminal(["status"], columns)
    assert code == 0, status
    assert long_name in status.split() and "localhost" in status.split(), status
    assert "…" not in doctor + status
