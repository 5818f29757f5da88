"""The idle decision, pure: the clock and the readings come in, actions go out."""

from __future__ import annotations

BUSY_KERNEL_STATES = ("busy",)

# A requested stop that has not taken the box down after this long is asked again.
STOP_RETRY_SECONDS = 600


def decide(config, state, signals, now):
    """(new state, actions) for one poll. Actions: ("warn", text), ("clear", ""), ("stop", why)."""
    state = dict(state)
    limit = float(config["idle_minutes"]) * 60
    last = state.get("last_active") or now  # the first poll starts the count
    boot = signals.get("boot_time")
    if boot and boot > last:
        last = boot  # a box that was stopped and started again starts a fresh count
    busy = []
    for kernel in signals.get("kernels", []):
        if kernel.get("state") in BUSY_KERNEL_STATES:
            busy.append("kernel {} is {}".format(kernel.get("id"), kernel.get("state")))
        if kernel.get("last_activity"):
            last = max(last, min(kernel["last_activity"], now))
    for session in signals.get("ssh_sessions", []):
        last = max(last, min(session["last_activity"], now))
    threshold = float(config["gpu_threshold"])
    for number, percent in enumerate(signals.get("gpu_utilisation") or []):
        if percent >= threshold:
            busy.append(f"GPU {number} at {percent:g}%")
    for pid in signals.get("keep_alive", []):
        busy.append(f"keep-alive process {pid}")
    if busy:
        last = now
    # Jupyter that cannot be read might hide a running cell: wait longer, but not forever
    # (a wrong token must not keep a GPU billing for a week).
    uncertain = list(signals.get("jupyter_errors", []))
    if uncertain:
        limit *= 2
    idle_seconds = max(0.0, now - last)
    state.update(
        last_active=last,
        last_check=now,
        idle_seconds=idle_seconds,
        busy=busy,
        uncertain=uncertain,
        limit_seconds=limit,
    )
    actions = []
    if not config.get("enabled", True):
        if state.get("warned_at"):
            actions.append(("clear", ""))
        state["warned_at"] = None
        return state, actions
    warn_at = max(0.0, limit - float(config["warn_minutes"]) * 60)
    if idle_seconds >= limit:
        asked = state.get("stop_requested_at")
        if not asked or asked < last or now - asked >= STOP_RETRY_SECONDS:
            why = f"idle for {minutes_text(idle_seconds)} (limit {minutes_text(limit)}): {idle_reasons(signals, uncertain)}"
            actions.append(("stop", why))
            state["stop_requested_at"] = now
            state["last_stop"] = {"at": now, "reason": why}
    elif idle_seconds >= warn_at:
        if not state.get("warned_at") or state["warned_at"] < last:
            left = minutes_text(limit - idle_seconds)
            actions.append(
                (
                    "warn",
                    f"gpubox: this box has been idle for {minutes_text(idle_seconds)} and stops in {left} unless it is "
                    "used (run a cell, type in a terminal, or `gpubox autostop NAME off`).",
                )
            )
            state["warned_at"] = now
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


def idle_reasons(signals, uncertain):
    parts = [f"no kernel busy ({len(signals.get('kernels', []))} kernels)"]
    parts.append(f"no SSH terminal in use ({len(signals.get('ssh_sessions', []))} open)")
    gpus = signals.get("gpu_utilisation")
    parts.append(
        "no GPU" if gpus is None else "GPUs at {}%".format(",".join(f"{g:g}" for g in gpus))
    )
    parts.append("no keep-alive process")
    if uncertain:
        parts.append(
            "Jupyter unreadable ({}), so the limit was doubled".format("; ".join(uncertain))
        )
    return ", ".join(parts)
