"""A box of several machines is idle only when every node is: after each poll, every
node 1.. tells node 0 how it is used, over SSH, with a key that can do nothing else.

  node 1..  `idle.py peer-key --node N`: make this node's report key once (ssh-keygen)
            and print its public half as JSON
  node 0    `idle.py peer-accept --node N --key "ssh-ed25519 ..."`: authorise that key
            in ~/.ssh/authorized_keys for one command only,
            restrict,command="... idle.py peer-report --node N"
  node 1..  `idle.py install --follow HOST:PORT --report-user U --report-host-key K
            --node N`: after each check, send {"at", "idle_seconds", "busy", "unknown"}
            (this node's own use: node 0 being up is left out) to node 0

Node 0 takes a fresh report as use of the box: its busy reasons, and its last activity
(as "idle for so long", so the two clocks need not agree). A node that has not reported
for three polls is unknown there, never busy: node 0 then waits twice its limit. No
cloud credential and no login shell is on any node: the key runs the report, nothing
else, and node 0's host key is pinned (the laptop's pin, passed on). Node 0 decides;
the nodes follow it down (idle_signals.node0_up). Standard library only, Python >= 3.8.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shlex
import subprocess
import sys

from agent_files import agent_home, log, path, read_json, write_json

KEY_COMMENT = "gpubox-idle-report node {}"
REPORT_TIMEOUT = 30
MAX_REPORT_BYTES = 64 * 1024
MAX_ITEMS, MAX_TEXT = 20, 200
STALE_POLLS = 3
NODE0_ALIAS = "gpubox-node-0"
_KEY_LINE = re.compile(r"^(ssh-[a-z0-9-]+|ecdsa-sha2-[a-z0-9-]+|sk-[a-z0-9@.-]+) [A-Za-z0-9+/=]+$")


def key_file():
    return path("peer", "id_ed25519")


def report_key(node):
    """This node's report key (made once); {"public_key": "ssh-ed25519 AAAA... comment"}."""
    private = key_file()
    if not os.path.exists(private):
        os.makedirs(os.path.dirname(private), mode=0o700, exist_ok=True)
        done = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C",
                               KEY_COMMENT.format(int(node)), "-f", private],
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        if done.returncode != 0:
            raise SystemExit("ssh-keygen failed: " + (done.stderr or done.stdout).strip()[-300:])
    with open(private + ".pub") as handle:
        return {"public_key": handle.read().strip()}


def forced_command(node):
    """What node 0's sshd runs for node N's key, whatever N asks: the report, from the
    agent's home (GPUBOX_AGENT_HOME, and a test's clock, carried along)."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "idle.py")
    env = ["GPUBOX_AGENT_HOME=" + agent_home()]
    if os.environ.get("GPUBOX_AGENT_CLOCK"):
        env.append("GPUBOX_AGENT_CLOCK=" + os.environ["GPUBOX_AGENT_CLOCK"])
    argv = ["env"] + env + [sys.executable or "python3", script, "peer-report", "--node", str(int(node))]
    return " ".join(shlex.quote(a) for a in argv)


def accept(node, key, authorized=None):
    """Authorise node N's report key on node 0 (replacing an older one of node N)."""
    node = int(node)
    parts = key.split()
    if len(parts) < 2 or not _KEY_LINE.match(parts[0] + " " + parts[1]):
        raise SystemExit(f"not an SSH public key: {key[:40]!r}")
    authorized = authorized or os.path.expanduser("~/.ssh/authorized_keys")
    os.makedirs(os.path.dirname(authorized), mode=0o700, exist_ok=True)  # 0700 when made here
    comment = KEY_COMMENT.format(node)
    command = forced_command(node).replace("\\", "\\\\").replace('"', '\\"')
    os.makedirs(path("state"), exist_ok=True)
    # Two gpubox commands joining nodes at once must not lose each other's lines.
    with open(path("state", "peers.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with open(authorized) as handle:
                lines = [line.rstrip("\n") for line in handle]
        except OSError:
            lines = []
        lines = [line for line in lines if not line.endswith(" " + comment)]
        lines.append(f'restrict,command="{command}" {parts[0]} {parts[1]} {comment}')
        tmp = f"{authorized}.gpubox-{os.getpid()}"
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
            handle.write("".join(line + "\n" for line in lines))
        os.replace(tmp, authorized)
        config = read_json(path("state", "idle-config.json"), {})
        config["peers"] = sorted(set(config.get("peers") or []) | {node})
        write_json(path("state", "idle-config.json"), config)
    return {"node": node, "authorized_keys": authorized}


def _texts(items):
    if not isinstance(items, list):
        return []
    return [str(item)[:MAX_TEXT] for item in items[:MAX_ITEMS]]


def receive(node, stream, now):
    """Node 0's side (the forced command): keep node N's report, checked, with the time
    it came on this clock."""
    raw = stream.read(MAX_REPORT_BYTES + 1)
    if len(raw) > MAX_REPORT_BYTES:
        raise SystemExit("report too long")
    try:
        report = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        idle_seconds = max(0.0, float(report["idle_seconds"]))
    except (ValueError, KeyError, TypeError):
        raise SystemExit("not a report") from None
    write_json(path("state", "peers", f"node-{int(node)}.json"),
               {"node": int(node), "received_at": now, "idle_seconds": idle_seconds,
                "busy": _texts(report.get("busy")), "unknown": _texts(report.get("unknown"))})  # fmt: skip
    return {"ok": True}


def read_reports(config, now):
    """On node 0: (peers, unknown). peers: each node's fresh report, its idle time on this
    clock; unknown: nodes that should report and have not lately."""
    peers, unknown = [], []
    stale = STALE_POLLS * float(config.get("poll_seconds", 60)) + 60
    for node in config.get("peers") or []:
        report = read_json(path("state", "peers", f"node-{int(node)}.json"), {})
        at = report.get("received_at")
        if at is None or now - at > stale:
            since = "never" if at is None else f"for {int((now - at) // 60)}m"
            unknown.append(f"node {node} has not reported its use ({since})")
            continue
        peers.append({"node": int(node), "idle_seconds": max(0.0, now - at) + report["idle_seconds"],
                      "busy": report.get("busy") or [], "reported_at": at})  # fmt: skip
        unknown.extend(f"node {node}: {text}" for text in report.get("unknown") or [])
    return peers, unknown


def report_argv(config):
    """The ssh command a node 1.. reports with: its own key only, node 0's pinned key, no
    prompt, no agent, no config file of anyone's."""
    host, _, port = str(config["follow"]).rpartition(":")
    return ["ssh", "-F", "/dev/null", "-T", "-p", port or "22", "-i", key_file(),
            "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none", "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile=" + path("peer", "known_hosts"),
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "HostKeyAlias=" + NODE0_ALIAS,
            "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR",
            f"{config['report_user']}@{host.strip('[]')}"]  # fmt: skip


def pin_node0(keys):
    """Node 0's host keys, as the laptop pinned them, for the report's ssh."""
    lines = []
    for key in keys:
        parts = key.split()
        if len(parts) < 2 or not _KEY_LINE.match(parts[0] + " " + parts[1]):
            raise SystemExit(f"not an SSH host key: {key[:40]!r}")
        lines.append(f"{NODE0_ALIAS} {parts[0]} {parts[1]}\n")
    os.makedirs(path("peer"), mode=0o700, exist_ok=True)
    with open(path("peer", "known_hosts"), "w") as handle:
        handle.write("".join(lines))


def send(config, state, own, now):
    """After a poll on node 1..: tell node 0 this node's own use. A failure is logged once
    per new error (node 0 counts a silent node as unknown)."""
    report = {"at": now, "idle_seconds": own.get("idle_seconds", 0.0),
              "busy": own.get("busy", []), "unknown": own.get("uncertain", [])}  # fmt: skip
    try:
        done = subprocess.run(report_argv(config), input=json.dumps(report), text=True,
                              capture_output=True, timeout=REPORT_TIMEOUT)  # fmt: skip
        error = None if done.returncode == 0 else (
            f"exit {done.returncode}: " + " ".join((done.stderr or done.stdout).split())[:200])
    except (OSError, subprocess.SubprocessError) as exc:
        error = repr(exc)
    if error and error != state.get("report_error"):
        log(f"report to node 0 failed ({error}); node 0 counts this node as unknown", now)
    elif not error and state.get("report_error"):
        log("report to node 0 works again", now)
    state["report_error"] = error
    state["reported_at"] = now if not error else state.get("reported_at")
