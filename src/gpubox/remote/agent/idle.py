#!/usr/bin/env python3
"""gpubox idle agent: runs ON the box and stops it when nobody has used it for a while.

Standard library only, Python >= 3.8: it runs on whatever python3 the host has,
before (and whether or not) the bootstrap's environment exists.

  idle.py check     one poll: read the signals, update state/idle.json, warn at
                    limit - 5 min, stop at the limit (or at max_hours of uptime);
                    a stop runs pre_stop first, and a stop that fails is kept in
                    the state and asked again at the next poll (idle_stop.py)
  idle.py install [--idle-minutes N|off] [--max-hours H|off] [--pre-stop CMD]
                  [--follow HOST:PORT|off]   (a node 1.. waits for its node 0)
                    write the config and schedule `check` (systemd timer, else a
                    crontab entry, else a nohup loop), or unschedule it with off;
                    the same schedule is updated in place
  idle.py status    JSON for the gpubox client (fresh readings, nothing acted on)
  idle.py loop      what the nohup fallback runs: check, sleep, forever
  idle.py peer-key | peer-accept | peer-report
                    a box of several machines: node 1.. reports its use to node 0
                    after each check (idle_peers.py)

A box is idle only when, for the whole window, no Jupyter kernel worked (busy AND
using the CPU) or had activity, no JupyterLab or SSH terminal saw input or output,
no process of the box's users used the CPU, every GPU stayed under the threshold
and no gpubox-keep held it (keep.py). A reading that fails is unknown, never busy:
the limit then counts double. The warning goes to `wall` and into JupyterLab
(jupyter_notice.py). On AWS the stop is an OS shutdown;
the instance's shutdown behaviour "stop" keeps the disk, and no AWS credentials
are needed on the box. Files live under ~/.gpubox (GPUBOX_AGENT_HOME moves them).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

# Run as a script the folder is on sys.path already; imported (tests, the client) it is not.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from agent_files import clock, load_config, log, path, read_json, write_json  # noqa: E402
from idle_decision import decide  # noqa: E402
from idle_schedule import can_stop, health, install  # noqa: E402
from idle_signals import read_signals  # noqa: E402
from idle_stop import cap_actions, merge, stop, stop_command  # noqa: E402
from keep import install_command  # noqa: E402


# --- acting --------------------------------------------------------------------
def jupyter_notice(action, *args):
    """write_notice / clear_notice of the JupyterLab banner, where it was shipped (a
    guard installed from the instance's small user data may have only `wall`)."""
    try:
        import jupyter_notice as notice
    except ImportError:
        return
    getattr(notice, action)(*args)


def act(config, signals, actions, now, state=None):
    for kind, text in actions:
        if kind == "warn":
            log("warning: " + text, now)
            if shutil.which("wall"):
                subprocess.run(
                    ["wall"], input=text + "\n", text=True, capture_output=True, timeout=20
                )
            jupyter_notice("write_notice", text, now)  # the banner in the open JupyterLab page
        elif kind == "clear":
            jupyter_notice("clear_notice")
        elif kind == "stop":
            stop(config, state if state is not None else {}, text, now)


def report_to_node0(config, state, now):
    """A node 1..: its own use (node 0 being up is left out: it holds this node, it is
    not its use) sent to node 0, which decides for the box."""
    import idle_peers

    held = state.get("held") or []
    own = dict(state, busy=[b for b in state.get("busy", []) if b not in held])
    idle_peers.send(config, state, own, now)


def check(now=None):
    config = load_config()
    now = clock() if now is None else now
    signals = read_signals(config, now)
    state_file = path("state", "idle.json")
    state, actions = decide(config, read_json(state_file, {}), signals, now)
    state, capped = cap_actions(config, state, signals, now)  # with idle stop on or off
    actions = merge(actions, capped)
    state["signals"] = signals
    if config.get("follow") and config.get("report_user"):
        report_to_node0(config, state, now)
    write_json(state_file, state)  # first: a stop that works may end this process
    act(config, signals, actions, now, state)
    if any(kind == "stop" for kind, _ in actions):
        write_json(state_file, state)  # the stop's outcome (and pre_stop's output)
    return state, actions


def status(now=None):
    """What the client shows: the stored state plus a fresh look, acting on nothing."""
    config = load_config()
    now = clock() if now is None else now
    stored = read_json(path("state", "idle.json"), {})
    signals = read_signals(config, now, remember=False)
    fresh, _ = decide(config, stored, signals, now)
    tail = []
    try:
        with open(path("logs", "idle.log")) as handle:
            tail = handle.read().splitlines()[-10:]
    except OSError:
        pass
    return {
        "enabled": bool(config.get("enabled")),
        "idle_minutes": config.get("idle_minutes"),
        "mode": config.get("mode"),
        "poll_seconds": config.get("poll_seconds"),
        "now": now,
        "last_active": fresh.get("last_active"),
        "idle_seconds": fresh.get("idle_seconds"),
        "busy": fresh.get("busy", []),
        "uncertain": fresh.get("uncertain", []),
        "unknown": fresh.get("uncertain", []),
        "last_check": stored.get("last_check"),
        "warned_at": stored.get("warned_at"),
        "last_stop": stored.get("last_stop"),
        "stop_failed": stored.get("stop_failed"),
        "pre_stop": stored.get("pre_stop"),
        "pre_stop_command": config.get("pre_stop") or None,
        "max_hours": config.get("max_hours"),
        "uptime_seconds": now - signals["boot_time"] if signals.get("boot_time") else None,
        "stop_command": stop_command(config),
        "can_stop": can_stop(config),
        "box_name": config.get("box_name") or None,
        "follow": config.get("follow") or None,
        "peers": signals.get("peers", []),
        "reported_at": stored.get("reported_at"),
        "report_error": stored.get("report_error"),
        "health": health(config, stored, now),
        "log_tail": tail,
    }


def loop():
    while True:
        try:
            check()
        except Exception as exc:  # one bad poll must not end the watch
            log(f"check failed: {exc!r}")
        time.sleep(float(load_config()["poll_seconds"]))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="idle.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("check", help="one poll: read the signals, warn or stop")
    sub.add_parser("status", help="JSON for the gpubox client")
    sub.add_parser("loop", help="check every poll_seconds, forever")
    inst = sub.add_parser("install", help="configure and schedule the checks")
    inst.add_argument("--idle-minutes", help="minutes, or off (default: as it is)")
    inst.add_argument("--warn-minutes", type=float)
    inst.add_argument("--poll-seconds", type=float)
    inst.add_argument("--stop-command", help="instead of shutdown (tests record the call)")
    inst.add_argument("--max-hours", help="stop after this many hours of uptime, busy or not; off")
    inst.add_argument("--pre-stop", help="a command run before any stop (save work)")
    inst.add_argument("--pre-stop-seconds", type=float, help="pre_stop's time limit")
    inst.add_argument("--run-as", help="the user the systemd check runs as (default: this one)")
    inst.add_argument("--jupyter-url")
    inst.add_argument("--jupyter-token-file")
    inst.add_argument("--notice-dir", action="append", help="(unused: the warning shows in JupyterLab)")
    inst.add_argument("--box-name", help="the box's name in gpubox, for the warning's commands")
    inst.add_argument("--follow", help="HOST:PORT of node 0's sshd (nodes 1.. of a box of "
                      "several machines): busy while it answers; off")
    inst.add_argument("--report-user", help="node 1..: the user it reports to node 0 as "
                      "(over SSH, to --follow); off")
    inst.add_argument("--report-host-key", action="append",
                      help="node 1..: node 0's SSH host key (pinned for the report)")
    inst.add_argument("--node", type=int, help="this node's rank in its box")
    key = sub.add_parser("peer-key", help="node 1..: make (once) and print its report key")
    key.add_argument("--node", type=int, required=True)
    accept = sub.add_parser("peer-accept", help="node 0: authorise node N's report key")
    accept.add_argument("--node", type=int, required=True)
    accept.add_argument("--key", required=True, help="the public key peer-key printed")
    accept.add_argument("--authorized-keys", help="default: ~/.ssh/authorized_keys")
    report = sub.add_parser("peer-report", help="node 0: keep node N's report (stdin)")
    report.add_argument("--node", type=int, required=True)
    inst.add_argument("--mode", default="auto", choices=["auto", "systemd", "cron", "loop", "none"])
    args = parser.parse_args(argv)
    if args.command == "check":
        state, actions = check()
        print(json.dumps({"idle_seconds": state["idle_seconds"], "actions": actions}))
    elif args.command == "status":
        print(json.dumps(status()))
    elif args.command == "loop":
        loop()
    elif args.command in ("peer-key", "peer-accept", "peer-report"):
        import idle_peers

        if args.command == "peer-key":
            answer = idle_peers.report_key(args.node)
        elif args.command == "peer-accept":
            answer = idle_peers.accept(args.node, args.key, args.authorized_keys)
        else:
            answer = idle_peers.receive(args.node, sys.stdin.buffer, clock())
        print(json.dumps(answer))
    elif args.command == "install":
        install(args)
        jupyter_notice("clear_notice")  # a new limit starts a fresh count: no old warning holds
        log(f"gpubox-keep: {install_command() or 'could not be put on the PATH'}")
    else:
        parser.print_help()
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
