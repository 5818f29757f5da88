"""Whose CPU use keeps a box up (remote/agent/idle_work.py): the login user's, root's
included, never a daemon's.

- A local box in a container: a PID namespace with its own /proc (this machine's other
  tests burn the CPU as root, and its agent would see them), the real `gpubox` command
  inside it, the agent's loop, a test clock and a stop command that writes a file. A
  real CPU job run as root holds the box; its end lets the box stop; `gpubox keep`
  holds it again, and `keep off` lets it stop.
- An ssh host with a real normal user (useradd) whose login is a real sshd session: its
  CPU job is work, root's is not.
- A systemd host (none here): a hand-made /proc with systemd's cgroup paths.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from tests.agent.agent_modules import signals
from tests.sshd import _children, free_port, keygen, start_sshd

pytestmark = pytest.mark.machine_wide

MIN = 60.0
REAPER = ("import os, time\nwhile True:\n    try:\n        os.wait()\n"
          "    except ChildProcessError:\n        time.sleep(0.2)\n")  # fmt: skip


def wait_for(predicate, timeout=90.0, step=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if step:
            step()
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"not true within {timeout}s: {predicate}")


@pytest.fixture
def container():
    """`nsenter` argv that runs a command inside a new PID namespace with its own /proc
    (its pid 1 a small reaper, as a container's init); everything in it dies with it."""
    if shutil.which("unshare") is None or shutil.which("nsenter") is None:
        pytest.skip("needs util-linux's unshare and nsenter")
    holder = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", "--kill-child",
                               sys.executable, "-c", REAPER], stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while not _children(holder.pid):
            if holder.poll() is not None:
                why = holder.stderr.read().decode()[-300:]
                pytest.skip(f"cannot make a PID namespace here: {why}")
            assert time.monotonic() < deadline, "unshare made no namespace"
            time.sleep(0.05)
        init = _children(holder.pid)[0]
        yield ["nsenter", "--target", str(init), "--pid", "--mount", "--"]
    finally:
        holder.kill()  # --kill-child: its pid 1 goes, and the kernel ends the rest
        holder.wait()


@pytest.mark.slow
def test_a_root_cpu_job_on_a_local_box_holds_it_its_end_lets_it_stop_and_keep_holds_it(
        container, tmp_path):
    if shutil.which("crontab"):
        pytest.skip("the agent would use cron, which runs outside the test's namespace")
    home, clock, stopped = tmp_path / "host-home", tmp_path / "clock", tmp_path / "stopped"
    home.mkdir()
    clock.write_text(str(time.time()))
    flag, token = tmp_path / "done", f"gpbx-job-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "HOME": str(home), "GPUBOX_IDLE_STOP_COMMAND": f"echo stopped >> {stopped}",
           "GPUBOX_AGENT_CLOCK": str(clock), "GPUBOX_IDLE_POLL_SECONDS": "0.5",
           "GPUBOX_JUPYTER_URL": f"http://127.0.0.1:{free_port()}"}  # fmt: skip
    env.pop("GPUBOX_IDLE_LOGIN_UID")  # the rule itself: root is this box's login user

    def gpubox(*args):
        done = subprocess.run([*container, sys.executable, "-m", "gpubox", *args], env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    def busy():
        state = json.loads((home / ".gpubox" / "state" / "idle.json").read_text())
        return state.get("busy", [])

    def tick():  # the agent polls every half second; ten minutes pass between its looks
        clock.write_text(str(float(clock.read_text()) + 600))

    def stops():
        return stopped.read_text().count("stopped") if stopped.exists() else 0

    gpubox("up", "c1", "--provider", "local", "--no-setup")
    # A CPU training run of root's: a loop until the flag file appears.
    job = subprocess.Popen([*container, "sh", "-c", f": {token}; while [ ! -e {flag} ]; do :; done"])
    try:
        said = gpubox("autostop", "c1", "1m")
        assert "background loop" in said.stdout + said.stderr
        config = home / ".gpubox" / "state" / "idle-config.json"
        # The bar is 20% of a core; this shared 2-core machine may give the loop less.
        config.write_text(json.dumps({**json.loads(config.read_text()), "process_cpu_percent": 5}))
        seen = wait_for(lambda: [b for b in busy() if token in b], step=tick)
        assert seen[0].startswith("process ") and f"% CPU (sh -c : {token};" in seen[0]
        for _ in range(12):  # two hours of the test's clock: the job holds the box
            tick()
            time.sleep(0.5)
        assert stops() == 0 and [b for b in busy() if token in b]
    finally:
        flag.write_text("")
        job.wait(timeout=30)
    wait_for(lambda: stops() == 1, step=tick)  # the job ended: idle, warned, stopped
    assert busy() == []
    log = (home / ".gpubox" / "logs" / "idle.log").read_text()
    assert "no process using the CPU" in log

    # `gpubox keep` holds the box; `keep off` lets it stop again. (The keep runs on the
    # machine's clock, which the test's has left hours behind: a day is sure to cover it.)
    gpubox("keep", "c1", "1d")
    wait_for(lambda: any(b.startswith("gpubox-keep until") for b in busy()), timeout=30)
    for _ in range(6):  # an hour of the test's clock
        tick()
        time.sleep(0.5)
    assert stops() == 1
    gpubox("keep", "c1", "off")
    wait_for(lambda: stops() == 2, step=tick)
    gpubox("autostop", "c1", "off")


@pytest.fixture
def normal_user(tmp_path):
    """A real account of its own (useradd), with a home outside pytest's root-only temp
    folder (sshd reads its authorized_keys as the user); removed afterwards."""
    if os.geteuid() != 0 or not shutil.which("useradd") or not os.path.exists("/usr/sbin/sshd"):
        pytest.skip("needs root, useradd and openssh-server to make a user and log in as it")
    name = f"gpbx{uuid.uuid4().hex[:8]}"
    top = Path(tempfile.mkdtemp(prefix="gpubox-user-"))
    top.chmod(0o755)
    home = top / "home"
    made = subprocess.run(["useradd", "--home-dir", str(home), "--create-home", "--shell",
                           "/bin/sh", "--password", "*", name], capture_output=True, text=True)  # fmt: skip
    if made.returncode != 0:
        shutil.rmtree(top, ignore_errors=True)
        pytest.skip(f"useradd failed: {made.stderr.strip()}")
    try:
        import pwd

        account = pwd.getpwnam(name)
        key = keygen(tmp_path / "user_ed25519", name)
        (home / ".ssh").mkdir(mode=0o700)
        shutil.copyfile(f"{key}.pub", home / ".ssh" / "authorized_keys")
        subprocess.run(["chown", "-R", f"{name}:", str(home)], check=True)
        yield account, key
    finally:
        for pid in [int(p) for p in os.listdir("/proc") if p.isdigit()]:  # its own, by pid
            try:
                if os.stat(f"/proc/{pid}").st_uid == account.pw_uid:
                    os.kill(pid, 9)
            except OSError:
                pass
        subprocess.run(["userdel", name], capture_output=True)
        shutil.rmtree(top, ignore_errors=True)


@pytest.mark.sshd
@pytest.mark.slow
def test_a_normal_users_cpu_job_on_an_ssh_host_is_work_and_roots_is_not(normal_user, tmp_path):
    account, key = normal_user
    home = Path(account.pw_dir)
    clock = home / "clock"
    clock.write_text(str(time.time()))
    os.chown(clock, account.pw_uid, account.pw_gid)
    server = start_sshd(tmp_path / "sshd", user_key=key, session_env={
        "HOME": str(home), "GPUBOX_AGENT_CLOCK": str(clock),
        "GPUBOX_IDLE_LOGIN_UID": ""})  # the rule itself: the login user is this account
    root_flag, user_flag = tmp_path / "root-done", home / "user-done"
    token = f"gpbx-job-{uuid.uuid4().hex[:8]}"
    root_job = subprocess.Popen(["sh", "-c", f": {token}-root; while [ ! -e {root_flag} ]; do :; done"])
    env = {**os.environ, "GPUBOX_IDLE_STOP_COMMAND": f"echo stopped >> {home}/stopped"}
    try:
        def gpubox(*args):
            done = subprocess.run([sys.executable, "-m", "gpubox", *args], env=env,
                                  capture_output=True, text=True, timeout=120)  # fmt: skip
            assert done.returncode == 0, done.stdout + done.stderr
            return done

        gpubox("up", "u1", "--host", f"{account.pw_name}@127.0.0.1:{server.port}",
               "--key", str(key), "--no-setup")
        gpubox("autostop", "u1", "1m")
        # The bar is 20% of a core; this shared 2-core machine may give the loop less.
        config = home / ".gpubox" / "state" / "idle-config.json"
        config.write_text(json.dumps({**json.loads(config.read_text()), "process_cpu_percent": 5}))
        # The user's own job, left running with nohup from its ssh session.
        gpubox("ssh", "u1", "--", f"nohup sh -c ': {token}-user; while [ ! -e {user_flag} ]; "
               "do :; done' </dev/null >/dev/null 2>&1 &")
        agent = f"GPUBOX_AGENT_HOME={home}/.gpubox python3 {home}/.gpubox/agent/idle.py"
        gpubox("ssh", "u1", "--", f"{agent} check")
        time.sleep(3)  # the CPU share is measured between two looks
        shown = json.loads(gpubox("ssh", "u1", "--", f"{agent} check").stdout.splitlines()[-1])
        state = json.loads((home / ".gpubox" / "state" / "idle.json").read_text())
        working = {p["command"]: p for p in state["signals"]["processes"]}
        mine = [p for c, p in working.items() if f"{token}-user" in c]
        assert mine and mine[0]["uid"] == account.pw_uid, (state["busy"], shown)
        assert mine[0]["whose"] == f"uid {account.pw_uid}'s, the login user's"
        assert not [c for c in working if f"{token}-root" in c]  # root's, not this user's
        assert all(p["uid"] == account.pw_uid for p in working.values())

        user_flag.write_text("")  # the job ends: nothing of this user's is work any more
        time.sleep(3)
        gpubox("ssh", "u1", "--", f"{agent} check")
        state = json.loads((home / ".gpubox" / "state" / "idle.json").read_text())
        assert state["signals"]["processes"] == [] and state["busy"] == []
        gpubox("autostop", "u1", "off")
    finally:
        root_flag.write_text("")
        user_flag.write_text("")
        root_job.wait(timeout=30)
        server.stop()


def fake_proc(root, table, init_cgroup):
    """A hand-made /proc (this machine has no systemd): pid -> (ppid, uid, name, cgroup,
    command, CPU seconds). Every process started 100 s ago, at boot + 900 s."""
    (root / "uptime").parent.mkdir(parents=True, exist_ok=True)
    (root / "uptime").write_text("1000.00 1500.00\n")
    tick = os.sysconf("SC_CLK_TCK")
    for pid, (ppid, uid, name, cgroup, command, seconds) in {
            1: (0, 0, "systemd", init_cgroup, "/sbin/init", 0), **table}.items():
        folder = root / str(pid)
        folder.mkdir()
        # After the name: state, ppid, ..., utime [11], stime [12], ..., starttime [19].
        fields = ["S", ppid] + [0] * 9 + [int(seconds * tick), 0] + [0] * 6 + [900 * tick]
        (folder / "stat").write_text(f"{pid} ({name}) " + " ".join(map(str, fields)) + "\n")
        (folder / "cmdline").write_bytes(command.replace(" ", "\0").encode() + b"\0")
        (folder / "cgroup").write_text(f"0::{cgroup}\n")
        os.chown(folder, uid, uid)


def test_on_a_systemd_host_work_in_sessions_and_under_jupyter_counts_and_services_do_not(
        tmp_path, monkeypatch):
    monkeypatch.setenv("GPUBOX_AGENT_HOME", str(tmp_path / "agent-home"))
    monkeypatch.delenv("GPUBOX_IDLE_LOGIN_UID")
    session = "/user.slice/user-0.slice/session-4.scope"
    jupyter = "/system.slice/jupyter.service"
    busy = 90  # CPU seconds of the 100 each has lived
    table = {
        10: (1, 0, "sshd", "/system.slice/ssh.service", "sshd: /usr/sbin/sshd -D", busy),
        11: (1, 0, "containerd", "/system.slice/containerd.service", "/usr/bin/containerd", busy),
        12: (1, 0, "unattended-upgr", "/system.slice/apt.service", "python3 /usr/bin/unattended-upgrade", busy),
        13: (1, 0, "python3", "/system.slice/other.service", "python3 /opt/daemon.py", busy),
        20: (10, 0, "sshd", session, "sshd: root@pts/0", busy),
        21: (20, 0, "python3", session, "python3 train.py", busy),  # root, in its ssh login
        22: (20, 0, "python3", session, "python3 idle.py", 1),  # root, not using the CPU
        30: (1, 0, "jupyter-lab", jupyter, "python3 -m jupyter lab", busy),
        31: (30, 0, "bash", jupyter, "/bin/bash -l", 0),  # a JupyterLab terminal
        32: (31, 0, "python3", jupyter, "python3 prep.py", busy),  # its command
    }
    fake_proc(tmp_path / "proc", table, "/init.scope")
    config = {"proc_dir": str(tmp_path / "proc"), "login_uid": 0}
    work, unknown = signals.read_cpu_work(config, [], [30], remember=False)
    assert unknown == []
    assert {p["pid"]: p["whose"] for p in work} == {21: "root's, in a user session",
                                                    32: "root's, under Jupyter"}
    assert work[0]["cpu_percent"] == 90.0

    # The same table where pid 1 is not systemd's (a container): root's processes count,
    # the named daemons still do not.
    other = tmp_path / "container-proc"
    fake_proc(other, table, "/")
    work, _ = signals.read_cpu_work({"proc_dir": str(other), "login_uid": 0}, [], [30],
                                    remember=False)  # fmt: skip
    assert sorted(p["pid"] for p in work) == [13, 21, 32]
    # With a login user who is not root, root's daemon is not work there either.
    work, _ = signals.read_cpu_work({"proc_dir": str(other), "login_uid": 1000}, [], [30],
                                    remember=False)  # fmt: skip
    assert sorted(p["pid"] for p in work) == [32]
