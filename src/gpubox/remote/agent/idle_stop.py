"""Stopping the box: the uptime cap, the pre_stop command, the stop command and its outcome.

Stdlib only, Python >= 3.8. The idle decision (idle_decision.py) says when a box is
idle; this module adds the cap on uptime (max_hours, whatever the box does) and runs
what a stop is: the user's pre_stop (to save work) within its time limit, then the
stop command. A stop command that fails is recorded, so the client can say so loudly,
and asked again at the next poll.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

from agent_files import log

OUTPUT_TAIL_LINES = 20


def default_stop_command():
    """Power the machine off; an AWS box's shutdown behaviour "stop" keeps its disk."""
    return "shutdown -h now" if os.geteuid() == 0 else "sudo -n shutdown -h now"


def stop_command(config):
    return config.get("stop_command") or default_stop_command()


def hours_text(seconds):
    minutes = int(round(seconds / 60.0))
    hours, rest = divmod(minutes, 60)
    return f"{hours}h{rest:02d}m" if rest else f"{hours}h"


def cap_actions(config, state, signals, now):
    """(state, actions) for the cap on uptime: warn warn_minutes before, then stop."""
    state = dict(state)
    cap = config.get("max_hours")
    boot = signals.get("boot_time")
    if not cap or not boot:
        state["cap_warned_at"] = None
        return state, []
    cap_seconds = float(cap) * 3600
    uptime = max(0.0, now - boot)
    state["uptime_seconds"] = uptime
    if uptime >= cap_seconds:
        asked = state.get("stop_requested_at")
        if asked and asked >= boot:
            return state, []  # asked already in this run; a failed stop clears `asked`
        why = f"up for {hours_text(uptime)}, the cap is {hours_text(cap_seconds)} (max_hours)"
        state["stop_requested_at"] = now
        state["last_stop"] = {"at": now, "reason": why}
        return state, [("stop", why)]
    warn_at = cap_seconds - float(config.get("warn_minutes", 5)) * 60
    warned = state.get("cap_warned_at")
    if uptime >= warn_at and not (warned and warned >= boot):
        name = config.get("box_name") or "this box"
        left = max(60.0, cap_seconds - uptime)
        text = (
            f"gpubox: {name} has been up for {hours_text(uptime)} and stops in "
            f"{int(round(left / 60))}m: its cap is {hours_text(cap_seconds)} of uptime, "
            f"busy or not. To keep it up, run `gpubox autostop {config.get('box_name') or 'NAME'}"
            " --max-hours off` on your laptop."
        )
        state["cap_warned_at"] = now
        return state, [("warn", text)]
    return state, []


def merge(idle_actions, cap_actions_):
    """One list for the poll: at most one stop, the first reason that asked for it."""
    stops = [a for a in idle_actions + cap_actions_ if a[0] == "stop"]
    if stops:
        return [stops[0]]
    return idle_actions + cap_actions_


def _tail(text):
    lines = (text or "").strip().splitlines()
    return lines[-OUTPUT_TAIL_LINES:]


def run_command(command, limit_seconds):
    """(exit code or None when it ran past its limit, output lines): the whole process
    group is killed at the limit, so a hung `git push` never holds the stop."""
    proc = subprocess.Popen(
        command,
        shell=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=os.path.expanduser("~"),
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=max(1.0, float(limit_seconds)))
        return proc.returncode, _tail(out)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        out, _ = proc.communicate()
        return None, _tail(out)


def run_pre_stop(config, why, now, limit_seconds=None):
    """Run the user's pre_stop (save work) before a stop; its record, or None without one."""
    command = config.get("pre_stop")
    if not command:
        return None
    limit = float(limit_seconds or config.get("pre_stop_seconds") or 300)
    log(f"pre_stop ({why}): running {command!r}, limit {int(limit)}s", now)
    started = time.monotonic()
    code, lines = run_command(command, limit)
    for line in lines:
        log("pre_stop| " + line, now)
    outcome = "ran past its limit and was killed" if code is None else f"exit {code}"
    log(f"pre_stop: {outcome}", now)
    return {
        "at": now,
        "command": command,
        "exit_code": code,
        "timed_out": code is None,
        "seconds": round(time.monotonic() - started, 1),
        "output_tail": lines,
    }


def run_stop(config, why, now):
    """Run the stop command; the record of what happened (ok, or the error)."""
    command = stop_command(config)
    log("stop: " + why + "; running: " + command, now)
    try:
        code, lines = run_command(command, 120)
    except OSError as exc:
        code, lines = -1, [repr(exc)]
    record = {"at": now, "reason": why, "command": command, "ok": code == 0}
    if code != 0:
        said = " ".join(lines)[-300:] or "no output"
        record["error"] = f"`{command}` {'hung' if code is None else f'exited {code}'}: {said}"
        log("stop FAILED: " + record["error"] + "; asking again at the next poll", now)
    return record


def stop(config, state, why, now):
    """pre_stop, then the stop command; the state records both and, on a failure, asks
    for the stop again at the next poll and keeps `stop_failed` until a stop succeeds."""
    pre = run_pre_stop(config, why, now)
    if pre is not None:
        state["pre_stop"] = pre
    record = run_stop(config, why, now)
    state["last_stop"] = record
    if record["ok"]:
        state.pop("stop_failed", None)
    else:
        state["stop_failed"] = record
        state["stop_requested_at"] = None
    return record
