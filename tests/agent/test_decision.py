"""The idle agent's decision, with an injected clock and fake readings.

The readings are hand-made dicts on purpose: this is the pure decision; the real
readings (a real Jupyter server, a real SSH terminal) are in test_agent_real.py.
"""

from __future__ import annotations

from tests.agent.agent_modules import decision

MIN = 60.0
T0 = 1_800_000_000.0  # any fixed epoch


def config(**over):
    base = {
        "enabled": True,
        "idle_minutes": 60,
        "warn_minutes": 5,
        "gpu_threshold": 5.0,
    }
    base.update(over)
    return base


def quiet(boot=T0 - 3600, **over):
    readings = {
        "kernels": [],
        "unknown": [],
        "terminals": [],
        "ssh_sessions": [],
        "gpu_utilisation": None,
        "processes": [],
        "keep": [],
        "boot_time": boot,
    }
    readings.update(over)
    return readings


def poll(cfg, readings_at, start, end, every=MIN, state=None):
    """Run decide every `every` seconds; the (time, action) pairs it asked for."""
    state = dict(state or {})
    done = []
    now = start
    while now <= end:
        state, actions = decision.decide(cfg, state, readings_at(now), now)
        done += [(now, kind, text) for kind, text in actions]
        now += every
    return state, done


def test_quiet_box_is_warned_five_minutes_before_and_stopped_at_the_limit():
    _, done = poll(config(), lambda now: quiet(), T0, T0 + 65 * MIN)
    kinds = [(t - T0, kind) for t, kind, _ in done]
    assert kinds == [(55 * MIN, "warn"), (60 * MIN, "stop")]
    stop_reason = done[-1][2]
    assert "idle for 60m" in stop_reason and "no kernel working" in stop_reason


def test_busy_kernel_keeps_the_box_and_its_last_activity_starts_the_count():
    def readings(now):
        if now < T0 + 30 * MIN:
            return quiet(kernels=[{"id": "k1", "state": "busy", "last_activity": now, "cpu_percent": 99.0}])
        return quiet(kernels=[{"id": "k1", "state": "idle", "last_activity": T0 + 30 * MIN}])

    state, done = poll(config(), readings, T0, T0 + 120 * MIN)
    stops = [t - T0 for t, kind, _ in done if kind == "stop"]
    assert stops[0] == 90 * MIN


def test_an_idle_kernel_that_merely_exists_does_not_keep_the_box_forever():
    old = T0 - 5 * 3600
    readings = quiet(kernels=[{"id": "k1", "state": "idle", "last_activity": old}])
    _, done = poll(config(), lambda now: readings, T0, T0 + 61 * MIN)
    assert [kind for _, kind, _ in done] == ["warn", "stop"]


def test_ssh_terminal_in_use_keeps_the_box_but_a_forgotten_one_does_not():
    def typing(now):
        return quiet(ssh_sessions=[{"tty": "/dev/pts/0", "last_activity": now - 10}])

    _, done = poll(config(), typing, T0, T0 + 180 * MIN)
    assert done == []

    forgotten = quiet(ssh_sessions=[{"tty": "/dev/pts/0", "last_activity": T0 - 3 * 3600}])
    _, done = poll(config(), lambda now: forgotten, T0, T0 + 61 * MIN)
    assert [kind for _, kind, _ in done] == ["warn", "stop"]


def test_gpu_over_threshold_is_busy_and_under_it_is_idle():
    _, done = poll(config(), lambda now: quiet(gpu_utilisation=[0.0, 87.0]), T0, T0 + 180 * MIN)
    assert done == []
    _, done = poll(config(), lambda now: quiet(gpu_utilisation=[2.0, 0.0]), T0, T0 + 61 * MIN)
    assert [kind for _, kind, _ in done] == ["warn", "stop"]


def test_keep_alive_process_keeps_the_box():
    kept = ["gpubox-keep while process 4242 runs (python train.py)"]
    state, done = poll(config(), lambda now: quiet(keep=kept), T0, T0 + 180 * MIN)
    assert done == [] and state["busy"] == kept


def test_activity_after_the_warning_clears_it():
    def readings(now):
        if now >= T0 + 56 * MIN:
            return quiet(ssh_sessions=[{"tty": "/dev/pts/1", "last_activity": now}])
        return quiet()

    _, done = poll(config(), readings, T0, T0 + 70 * MIN)
    assert [(t - T0, kind) for t, kind, _ in done] == [(55 * MIN, "warn"), (56 * MIN, "clear")]


def test_unreadable_jupyter_doubles_the_limit_but_still_stops():
    readings = quiet(unknown=["Jupyter at http://127.0.0.1:8888: HTTP 403"])
    _, done = poll(config(), lambda now: readings, T0, T0 + 130 * MIN)
    stops = [(t - T0, text) for t, kind, text in done if kind == "stop"]
    assert stops[0][0] == 120 * MIN
    assert "HTTP 403" in stops[0][1]


def test_off_never_stops():
    _, done = poll(config(enabled=False), lambda now: quiet(), T0, T0 + 24 * 60 * MIN)
    assert done == []


def test_a_stop_is_asked_once_then_again_only_if_the_box_is_still_up_ten_minutes_later():
    _, done = poll(config(), lambda now: quiet(), T0, T0 + 75 * MIN)
    assert [t - T0 for t, kind, _ in done if kind == "stop"] == [60 * MIN, 70 * MIN]


def test_a_box_started_again_after_an_idle_stop_gets_a_fresh_count():
    state, done = poll(config(), lambda now: quiet(), T0, T0 + 60 * MIN)
    assert done[-1][1] == "stop"
    # Stopped at T0+60m; the user starts it again at T0+300m: the boot time moves.
    boot = T0 + 300 * MIN
    _, done = poll(config(), lambda now: quiet(boot=boot), boot + MIN, boot + 30 * MIN, state=state)
    # The leftover notice is cleared; no warning, no stop.
    assert [kind for _, kind, _ in done] == ["clear"]


def test_whole_day_idle_box_stops_within_limit_plus_poll_and_long_kernel_box_does_not():
    """Two boxes, one simulated day, a poll every 60 s, limit 45 min."""
    cfg = config(idle_minutes=45)
    poll_every = 60.0
    day_start = T0
    # Box A: the user works in a notebook 09:00-09:20, then leaves it.
    a_left_at = day_start + 9 * 3600 + 20 * MIN
    # Box B: a training cell runs from 08:00 to 23:00, then the kernel goes idle.
    b_cell = (day_start + 8 * 3600, day_start + 23 * 3600)

    def box_a(now):
        if day_start + 9 * 3600 <= now < a_left_at:
            return quiet(
                boot=day_start, kernels=[{"id": "a", "state": "busy", "last_activity": now, "cpu_percent": 99.0}]
            )
        last = a_left_at if now >= a_left_at else None
        return quiet(boot=day_start, kernels=[{"id": "a", "state": "idle", "last_activity": last}])

    def box_b(now):
        running = b_cell[0] <= now < b_cell[1]
        kernel = {"id": "b", "state": "busy" if running else "idle", "cpu_percent": 100.0}
        kernel["last_activity"] = now if running else (b_cell[1] if now >= b_cell[1] else None)
        return quiet(boot=day_start, kernels=[kernel])

    # A is started at 09:00 for that work; B at 07:50.
    start_a, start_b = day_start + 9 * 3600, day_start + 7 * 3600 + 50 * MIN
    end = day_start + 24 * 3600
    state_a = {"last_active": start_a}
    state_b = {"last_active": start_b}
    stopped_a = stopped_b = None
    now = start_b
    while now <= end:
        if stopped_a is None and now >= start_a:
            state_a, actions = decision.decide(cfg, state_a, box_a(now), now)
            if any(kind == "stop" for kind, _ in actions):
                stopped_a = now
        if stopped_b is None:
            state_b, actions = decision.decide(cfg, state_b, box_b(now), now)
            if any(kind == "stop" for kind, _ in actions):
                stopped_b = now
        now += poll_every

    limit = 45 * MIN
    # A: stopped within the limit plus one poll of the user leaving, never before.
    assert stopped_a is not None
    assert limit <= stopped_a - a_left_at <= limit + poll_every
    # B's cell runs all day: never stopped while it runs; stopped once it has been idle.
    assert stopped_b is not None and stopped_b >= b_cell[1] + limit
    assert stopped_b - b_cell[1] <= limit + poll_every


def test_whole_day_box_left_after_work_stops_within_limit_plus_poll():
    cfg = config(idle_minutes=30)
    start = T0 + 9 * 3600
    left = T0 + 17 * 3600 + 7 * MIN + 13  # leaves at an odd second

    def readings(now):
        if now < left:
            return quiet(boot=T0, ssh_sessions=[{"tty": "/dev/pts/2", "last_activity": now - 5}])
        return quiet(boot=T0, ssh_sessions=[{"tty": "/dev/pts/2", "last_activity": left}])

    _, done = poll(cfg, readings, start, T0 + 24 * 3600, state={"last_active": start})
    stops = [t for t, kind, _ in done if kind == "stop"]
    assert stops, "the box was never stopped"
    assert 30 * MIN <= stops[0] - left <= 30 * MIN + MIN


def test_systemd_units_run_the_check_as_the_user_every_poll_and_from_boot():
    from tests.agent.agent_modules import AGENT_DIR, schedule

    service, timer = schedule.unit_texts(
        {"poll_seconds": 60}, "ubuntu", ["GPUBOX_AGENT_HOME=/home/ubuntu/.gpubox"]
    )
    assert "User=ubuntu\n" in service and "Type=oneshot" in service
    assert f"{AGENT_DIR / 'idle.py'} check" in service
    assert "Environment=GPUBOX_AGENT_HOME=/home/ubuntu/.gpubox" in service
    assert "OnBootSec=60s" in timer and "OnUnitActiveSec=60s" in timer
    assert "WantedBy=timers.target" in timer


def test_a_busy_kernel_with_no_cpu_is_idle_from_its_last_activity():
    # Hung, or waiting on input() with the tab closed: "busy" all day, no CPU, no GPU.
    started = T0 + 10 * MIN
    hung = {"id": "k1", "state": "busy", "last_activity": started, "cpu_percent": 0.0}
    _, done = poll(config(), lambda now: quiet(kernels=[hung], gpu_utilisation=[0.0]),
                   T0 + 10 * MIN, T0 + 75 * MIN)  # fmt: skip
    assert [(t - started, kind) for t, kind, _ in done] == [(55 * MIN, "warn"), (60 * MIN, "stop")]


def test_a_busy_kernel_whose_process_was_not_found_counts_as_unknown_not_busy():
    lost = {"id": "k1", "state": "busy", "last_activity": T0, "cpu_percent": None}
    readings = quiet(kernels=[lost], unknown=["kernel k1: its process was not found"])
    state, done = poll(config(), lambda now: readings, T0, T0 + 125 * MIN)
    assert state["busy"] == []
    assert [t - T0 for t, kind, _ in done if kind == "stop"] == [120 * MIN]


def test_an_unreadable_gpu_is_unknown_and_the_box_stops_at_twice_the_limit():
    broken = "GPU: nvidia-smi failed (exit 9): Failed to initialize NVML: Driver/library version mismatch"
    _, done = poll(config(), lambda now: quiet(unknown=[broken]), T0, T0 + 7 * 24 * 60 * MIN)
    assert [(t - T0, kind) for t, kind, _ in done][:2] == [(115 * MIN, "warn"), (120 * MIN, "stop")]
    assert "Failed to initialize NVML" in done[1][2] and "doubled" in done[1][2]
    assert "twice as long" in done[0][2]


def test_a_user_process_using_the_cpu_keeps_the_box_and_its_end_starts_the_count():
    def readings(now):
        if now < T0 + 200 * MIN:
            return quiet(processes=[{"pid": 77, "uid": 1000, "cpu_percent": 98.0,
                                     "command": "python train.py"}])  # fmt: skip
        return quiet()

    state, done = poll(config(), readings, T0, T0 + 199 * MIN)
    assert done == [] and state["busy"] == ["process 77 at 98% CPU (python train.py)"]
    _, done = poll(config(), readings, T0 + 200 * MIN, T0 + 261 * MIN, state=state)
    assert [t - T0 for t, kind, _ in done if kind == "stop"] == [259 * MIN]


def test_typing_in_a_jupyterlab_terminal_counts_as_use():
    def readings(now):
        return quiet(terminals=[{"name": "1", "last_activity": now - 30}])

    _, done = poll(config(), readings, T0, T0 + 180 * MIN)
    assert done == []


def test_the_warning_says_when_why_and_how_to_keep_the_box_by_its_name():
    _, done = poll(config(box_name="box1"), lambda now: quiet(), T0, T0 + 56 * MIN)
    (when, kind, text), = done
    assert kind == "warn" and when == T0 + 55 * MIN
    stop_at = decision.time.strftime("%H:%M UTC", decision.time.gmtime(T0 + 60 * MIN))
    assert f"stops at {stop_at} (in 5m)" in text
    assert "nobody has used it for 55m" in text
    assert "`gpubox keep box1 2h` on your laptop" in text and "`gpubox-keep 2h` on the box" in text
    assert "NAME" not in text and "type in a terminal" not in text


def test_a_stop_always_comes_a_full_warning_after_the_warning_even_when_the_limit_shrinks():
    # Unknown for 100 minutes (limit 120), then readable again: 100 idle minutes are
    # over the 60-minute limit at once, but nobody was warned yet.
    def readings(now):
        return quiet(unknown=["GPU: nvidia-smi timed out"]) if now < T0 + 100 * MIN else quiet()

    _, done = poll(config(), readings, T0, T0 + 110 * MIN)
    assert [(t - T0, kind) for t, kind, _ in done] == [(100 * MIN, "warn"), (105 * MIN, "stop")]
    assert "(in 5m)" in done[0][2]


def test_a_limit_shorter_than_the_warning_warns_at_once_and_stops_at_the_limit():
    _, done = poll(config(idle_minutes=1), lambda now: quiet(), T0, T0 + 2 * MIN, every=15)
    assert [(t - T0, kind) for t, kind, _ in done] == [(0, "warn"), (60, "stop")]
