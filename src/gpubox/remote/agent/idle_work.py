"""Whose CPU use is work: the box's login user's, root included, and never a daemon's.

Stdlib only, Python >= 3.8. idle_signals.py measures each process's CPU share over
the poll window; a process over the bar is work when someone using the box runs it:

- anything under the box's Jupyter server (a terminal's command, `!python train.py`);
- on a systemd host, anything in a user session (its cgroup under user.slice: an SSH
  login, root's too, and what it left running with nohup, tmux or screen); the
  services of system.slice (sshd, containerd, apt's timers, the agent's own) are not;
- a process of the login user (the user the agent was installed for) anywhere, except
  where that user is root on a systemd host (root's work there is in its sessions);
  so on a host without systemd (a container, many rented GPU hosts) root's processes
  count when root is the login user.

Never work: the agent (itself, what started it, its other runs), pid 1, kernel
threads, well-known daemons by name, the Jupyter server itself and its kernels
(idle_decision.py judges a kernel by its state and CPU). The setting process_uids (a
list of uids) replaces the rule: exactly those uids' processes count.
GPUBOX_IDLE_LOGIN_UID (environment) overrides the login user, as the test suite does
to watch a uid that nothing else on its shared machine uses.
"""

from __future__ import annotations

import os

from proc_table import systemd_cgroup

AGENT_DIR = os.path.dirname(os.path.abspath(__file__))
# Daemons by the kernel's name of the process (15 characters at most).
DAEMONS = frozenset((
    "init", "(sd-pam)", "sshd", "sshd-session", "sshd-auth", "cron", "crond", "atd",
    "anacron", "rsyslogd", "syslog-ng", "dbus-daemon", "dbus-broker", "containerd",
    "containerd-shim", "dockerd", "docker-proxy", "snapd", "polkitd", "udevd",
    "irqbalance", "multipathd", "chronyd", "ntpd", "agetty", "getty", "login", "tini",
    "dumb-init", "supervisord", "nvidia-persiste", "nv-hostengine", "amazon-ssm-agen",
    "ssm-agent-worke", "unattended-upgr", "packagekitd", "networkd-dispat", "udisksd",
    "accounts-daemon", "ModemManager", "NetworkManager", "dhclient", "tailscaled",
))  # fmt: skip
DAEMON_PREFIXES = ("systemd", "containerd-shim")


def login_uid(config):
    """The uid of the box's login user: recorded at install (the user the checks run
    as); else the agent's own, which is that user's in every way it is scheduled."""
    forced = os.environ.get("GPUBOX_IDLE_LOGIN_UID", "").strip()
    if forced:
        return int(forced)
    if config.get("login_uid") is not None:
        return int(config["login_uid"])
    return os.geteuid()


def lineage(pid, parents):
    """pid, its parent, its parent's parent... up to pid 1 (a loop in a racy table ends)."""
    line = []
    while pid and pid not in line and len(line) < 512:
        line.append(pid)
        pid = parents.get(pid)
    return line


def judge(config, procs, jupyter_pids, proc_dir="/proc"):
    """A function of one process (a dict of proc_table.read_processes): why it is
    someone's work ("root's, in a user session"), or None when it is not."""
    parents = {proc["pid"]: proc["ppid"] for proc in procs}
    me = os.getpid()
    agent = set(lineage(me, parents))  # the agent and what started it (cron, a shell)
    jupyter = {int(pid) for pid in jupyter_pids}
    uids = config.get("process_uids")
    user = login_uid(config)
    systemd = systemd_cgroup(1, proc_dir) == "/init.scope"

    def whose(proc):
        pid = proc["pid"]
        # (A parent of 0 is outside this PID namespace: `docker exec`, nsenter; it counts.)
        if pid == 1 or proc["ppid"] == 2 or pid in agent or not proc["command"]:
            return None  # init, kernel threads, the agent and what started it
        if AGENT_DIR in proc["command"]:
            return None  # another run of the agent (a status look while a check runs)
        line = lineage(pid, parents)
        owner = "root's" if proc["uid"] == 0 else f"uid {proc['uid']}'s"
        if uids is not None:
            return f"{owner} (process_uids)" if proc["uid"] in uids else None
        name = proc.get("name", "")
        if name in DAEMONS or name.startswith(DAEMON_PREFIXES):
            return None
        if jupyter.intersection(line[1:]):
            return f"{owner}, under Jupyter"
        if systemd and (systemd_cgroup(pid, proc_dir) or "").startswith("/user.slice/"):
            return f"{owner}, in a user session"
        if proc["uid"] == user and not (systemd and user == 0):
            return f"{owner}, the login user's"
        return None

    return whose
