"""The process table from /proc, and each process's CPU share between two looks.

Stdlib only, Python >= 3.8. A process is known by its pid AND its start time (field
22 of /proc/PID/stat, in clock ticks since boot), so a reused pid is a new process.
Shares are measured on the machine's own clock (/proc/uptime, as the process times
are), never on the agent's: a test's clock that jumps hours must not hide a CPU job.
"""

from __future__ import annotations

import os

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
# Two looks closer together than this say little; the process's lifetime average is used.
MIN_WINDOW_SECONDS = 2.0


def stat_fields(proc_dir, pid):
    """The fields of /proc/PID/stat after the command name (which may hold spaces)."""
    with open(os.path.join(proc_dir, str(pid), "stat")) as handle:
        return handle.read().rsplit(")", 1)[1].split()


def start_ticks(pid, proc_dir="/proc"):
    """When process pid started, in clock ticks since boot; None when there is no such process."""
    try:
        return int(stat_fields(proc_dir, pid)[19])
    except (OSError, ValueError, IndexError):
        return None


def uptime(proc_dir="/proc"):
    with open(os.path.join(proc_dir, "uptime")) as handle:
        return float(handle.read().split()[0])


def read_processes(proc_dir="/proc"):
    """([{pid, ppid, uid, name, start, ticks, command, age}], None), or ([], why) when the
    table cannot be read. name is the kernel's (15 characters at most: "unattended-upgr")."""
    try:
        pids = [int(name) for name in os.listdir(proc_dir) if name.isdigit()]
        up = uptime(proc_dir)
    except (OSError, ValueError) as exc:
        return [], f"cannot read the process table in {proc_dir} ({exc})"
    procs = []
    for pid in pids:
        try:
            with open(os.path.join(proc_dir, str(pid), "stat")) as handle:
                text = handle.read()
            name = text[text.find("(") + 1 : text.rfind(")")]
            fields = text.rsplit(")", 1)[1].split()
            uid = os.stat(os.path.join(proc_dir, str(pid))).st_uid
            with open(os.path.join(proc_dir, str(pid), "cmdline"), "rb") as handle:
                command = handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, ValueError, IndexError):
            continue  # it ended while we looked
        # Fields after the name: state is [0], ppid [1], utime [11], stime [12], starttime [19].
        procs.append({"pid": pid, "ppid": int(fields[1]), "uid": uid, "name": name,
                      "start": int(fields[19]),
                      "ticks": int(fields[11]) + int(fields[12]), "command": command,
                      "age": max(0.0, up - int(fields[19]) / CLK_TCK)})  # fmt: skip
    if not procs:
        return [], f"no process readable in {proc_dir}"
    return procs, None


def cpu_usage(procs, sample, up):
    """{pid: percent of one core} since the sample taken at the previous poll; `up` and
    the sample's "uptime" are /proc/uptime's seconds at the two looks.

    A process the sample does not know (new, or a reused pid) is averaged over its
    lifetime, which lies inside the window anyway.
    """
    before = (sample.get("procs") or {}) if "uptime" in sample else {}
    window = up - float(sample.get("uptime") or 0)
    usage = {}
    for proc in procs:
        old = before.get(str(proc["pid"]))
        if old and old[0] == proc["start"] and window >= MIN_WINDOW_SECONDS:
            seconds, span = (proc["ticks"] - old[1]) / CLK_TCK, window
        else:
            seconds, span = proc["ticks"] / CLK_TCK, proc["age"]
        usage[proc["pid"]] = 100.0 * seconds / span if span > 0 else 0.0
    return usage


def systemd_cgroup(pid, proc_dir="/proc"):
    """Where systemd put the process ("/user.slice/user-1000.slice/session-3.scope",
    "/system.slice/ssh.service"): cgroup v1's name=systemd line, else v2's; None when
    it cannot be read. A host without systemd (a container) shows "/" or its own path."""
    try:
        with open(os.path.join(proc_dir, str(pid), "cgroup")) as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    unified = None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) == 3 and parts[1] == "name=systemd":
            return parts[2]
        if len(parts) == 3 and parts[0] == "0" and parts[1] == "":
            unified = parts[2]
    return unified
