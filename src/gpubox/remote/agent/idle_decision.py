"""The idle decision, pure: the clock and the readings come in, actions go out."""

from __future__ import annotations

import time

BUSY_KERNEL_STATES = ("busy",)
# A busy kernel whose process uses less than this share of a core is not working.
KERNEL_CPU_PERCENT = 5.0

# A requested stop that has not taken the box down after this long is asked again.
STOP_RETRY_SECONDS = 600
# Polls drift by a few seconds (the systemd timer's AccuracySec): a warning 4m57s
# before a poll still counts as the 5 minutes' warning.
TIMER_SLACK_SECONDS = 5.0


def decide(config, state, signals, now):
    """(new state, actions) for one poll. Actions: ("warn", text), ("clear", ""), ("stop", why)."""
    state = dict(state)
    limit = float(config["idle_minutes"]) * 60
    last = state.get("last_active") or now  # the first poll starts the count
    boot = signals.get("boot_time")
    if boot and boot > last:
        last = boot  # a box that was stopped and started again starts a fresh count
    busy = []
    gpus = signals.get("gpu_utilisation") or []
    threshold = float(config["gpu_threshold"])
    kernel_cpu = float(config.get("kernel_cpu_percent", KERNEL_CPU_PERCENT))
    for kernel in signals.get("kernels", []):
        cpu = kernel.get("cpu_percent")
        # "busy" alone is not work: a hung cell or one waiting on input() is busy too.
        if kernel.get("state") in BUSY_KERNEL_STATES and cpu is not None and cpu >= kernel_cpu:
            busy.append("kernel {} running a cell ({:.0f}% CPU)".format(kernel.get("id"), cpu))
        if kernel.get("last_activity"):
            last = max(last, min(kernel["last_activity"], now))
    for terminal in signals.get("terminals", []):
        if terminal.get("last_activity"):
            last = max(last, min(terminal["last_activity"], now))
    for session in signals.get("ssh_sessions", []):
        last = max(last, min(session["last_activity"], now))
    for number, percent in enumerate(gpus):
        if percent >= threshold:
            busy.append(f"GPU {number} at {percent:g}%")
    for proc in signals.get("processes", []):
        busy.append("process {} at {:.0f}% CPU ({})".format(proc["pid"], proc["cpu_percent"], proc["command"]))
    busy.extend(signals.get("keep", []))
    for peer in signals.get("peers", []):  # node 0 of several: the others' own use
        last = max(last, now - peer["idle_seconds"])
        busy.extend("node {}: {}".format(peer["node"], text) for text in peer.get("busy", []))
    if busy:
        last = now
    # A node 1.. of a box of several is held while node 0 is up, but that is not its own
    # use: once node 0 has stopped (every node idle), its own idle time already counts.
    held = list(signals.get("follow", []))
    # A reading that cannot be taken (GPU, Jupyter, the process table) might hide work:
    # wait longer, but never for ever (a broken driver must not keep a GPU billing for a week).
    uncertain = list(signals.get("unknown", []))
    if uncertain:
        limit *= 2
    idle_seconds = max(0.0, now - last)
    state.update(
        last_active=last,
        last_check=now,
        idle_seconds=idle_seconds,
        busy=busy + held,
        held=held,
        uncertain=uncertain,
        limit_seconds=limit,
    )
    actions = []
    if not config.get("enabled", True) or held:
        if state.get("warned_at"):
            actions.append(("clear", ""))
        state["warned_at"] = None
        return state, actions
    # Users are always warned this long before the stop (never longer than the limit),
    # even when the limit shrinks under an idle box (an unknown reading came back).
    lead = min(float(config["warn_minutes"]) * 60, limit)
    warn_at = limit - lead
    if idle_seconds >= warn_at:
        warned = state.get("warned_at")
        if not warned or warned < last:
            left = max(limit - idle_seconds, lead)
            actions.append(("warn", warning_text(config, idle_seconds, left, now, uncertain)))
            state["warned_at"] = warned = now
        if idle_seconds >= limit and now - warned + TIMER_SLACK_SECONDS >= lead:
            asked = state.get("stop_requested_at")
            if not asked or asked < last or now - asked >= STOP_RETRY_SECONDS:
                why = f"idle for {minutes_text(idle_seconds)} (limit {minutes_text(limit)}): {idle_reasons(signals, uncertain)}"
                actions.append(("stop", why))
                state["stop_requested_at"] = now
                state["last_stop"] = {"at": now, "reason": why}
    elif state.get("warned_at"):
        actions.append(("clear", ""))
        state["warned_at"] = None
    return state, actions


def minutes_text(seconds):
    minutes = int(round(seconds / 60.0))
    if minutes < 1:
        return f"{int(seconds)}s"
    if minutes < 120:
        return f"{minutes}m"
    return "{}h{:02d}m".format(*divmod(minutes, 60))


def warning_text(config, idle_seconds, left, now, uncertain):
    """What users read before the stop (`left` seconds ahead): when, why, how to keep the box."""
    stop_at = time.strftime("%H:%M UTC", time.gmtime(now + left))
    name = config.get("box_name")
    laptop = f"`gpubox keep {name} 2h` on your laptop, or " if name else ""
    text = (
        f"gpubox: {'box ' + name if name else 'this box'} stops at {stop_at} (in {minutes_text(left)}) "
        f"because nobody has used it for {minutes_text(idle_seconds)}: no cell working, no terminal "
        f"in use, no busy process or GPU. To keep it, run {laptop}`gpubox-keep 2h` on the box "
        "(`gpubox-keep -- python train.py` keeps it while that runs)."
    )
    if uncertain:
        text += " Some readings are unknown ({}), so it waited twice as long.".format("; ".join(uncertain))
    return text


def idle_reasons(signals, uncertain):
    parts = [f"no kernel working ({len(signals.get('kernels', []))} kernels)"]
    parts.append(f"no terminal in use ({len(signals.get('ssh_sessions', []))} SSH, "
                 f"{len(signals.get('terminals', []))} JupyterLab)")  # fmt: skip
    gpus = signals.get("gpu_utilisation")
    parts.append(
        "no GPU" if gpus is None else "GPUs at {}%".format(",".join(f"{g:g}" for g in gpus))
    )
    parts.append("no process using the CPU, no gpubox-keep")
    peers = signals.get("peers") or []
    if peers:
        parts.append("nodes {} idle too".format(",".join(str(p["node"]) for p in peers)))
    if uncertain:
        parts.append("unknown: {}, so the limit was doubled".format("; ".join(uncertain)))
    return ", ".join(parts)
