"""Scheduling the idle checks: a systemd timer, else a crontab entry, else a nohup loop."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys

from agent_files import agent_home, clock, load_config, log, path, pid_alive, read_json, write_json
from idle_decision import minutes_text

CRON_MARK = "# gpubox-idle"
UNIT = "gpubox-idle"


def has_systemd():
    return os.path.isdir("/run/systemd/system") and bool(shutil.which("systemctl"))


def as_root(argv):
    """argv run as root: directly when we are root, else through passwordless sudo."""
    return argv if os.geteuid() == 0 else ["sudo", "-n"] + argv


def can_be_root():
    if os.geteuid() == 0:
        return True
    if not shutil.which("sudo"):
        return False
    return subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0


def can_stop(config):
    """Whether the stop command can work: a command of the user's own is trusted; the
    default power-off needs root or passwordless sudo."""
    return bool(config.get("stop_command")) or can_be_root()


def systemd_dir():
    # GPUBOX_SYSTEMD_DIR: a test's scratch root instead of the real /etc.
    return os.environ.get("GPUBOX_SYSTEMD_DIR") or "/etc/systemd/system"


def check_command():
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "idle.py")
    return [sys.executable or "python3", script, "check"]


def unit_texts(config, user, env):
    """The systemd service and timer: the check runs as the box's user, every poll_seconds,
    from boot on (so it survives reboots)."""
    service = (
        "[Unit]\nDescription=gpubox idle auto-stop check\n\n[Service]\nType=oneshot\n"
        # pre_stop may take its five minutes before the stop; a hung check must end.
        "TimeoutStartSec=30min\nUser={}\n{}ExecStart={}\n".format(
            user,
            "".join(f"Environment={shlex.quote(e)}\n" for e in env),
            " ".join(shlex.quote(a) for a in check_command()),
        )
    )
    every = int(config["poll_seconds"])
    timer = (
        f"[Unit]\nDescription=gpubox idle auto-stop, every {every}s\n\n[Timer]\n"
        f"OnBootSec=60s\nOnUnitActiveSec={every}s\nAccuracySec=5s\n\n[Install]\n"
        "WantedBy=timers.target\n"
    )
    return service, timer


def install_systemd(config, run_as=None):
    user = run_as or os.environ.get("USER") or ""
    try:
        import pwd

        user = run_as or pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError):
        pass
    env = ["GPUBOX_AGENT_HOME=" + agent_home()]
    if os.environ.get("GPUBOX_IDLE_STOP_COMMAND"):
        env.append("GPUBOX_IDLE_STOP_COMMAND=" + os.environ["GPUBOX_IDLE_STOP_COMMAND"])
    service, timer = unit_texts(config, user, env)
    for name, text in ((UNIT + ".service", service), (UNIT + ".timer", timer)):
        subprocess.run(
            as_root(["tee", os.path.join(systemd_dir(), name)]),
            input=text,
            text=True,
            capture_output=True,
            check=True,
        )
    subprocess.run(as_root(["systemctl", "daemon-reload"]), check=True, capture_output=True)
    subprocess.run(
        as_root(["systemctl", "enable", "--now", UNIT + ".timer"]), check=True, capture_output=True
    )


def uid_of(user):
    """The uid of the named user (None when unknown: the agent's own then), else ours."""
    if not user:
        return os.geteuid()
    try:
        import pwd

        return pwd.getpwnam(user).pw_uid
    except (ImportError, KeyError):
        return None


def crontab_lines():
    done = subprocess.run(["crontab", "-l"], capture_output=True, text=True)
    lines = done.stdout.splitlines() if done.returncode == 0 else []
    return [line for line in lines if CRON_MARK not in line]


def write_crontab(lines):
    text = "\n".join(lines) + ("\n" if lines else "")
    subprocess.run(["crontab", "-"], input=text, text=True, check=True, capture_output=True)


def install_cron():
    job = "* * * * * GPUBOX_AGENT_HOME={} {} >/dev/null 2>&1 {}".format(
        shlex.quote(agent_home()), " ".join(shlex.quote(a) for a in check_command()), CRON_MARK
    )
    write_crontab(crontab_lines() + [job])


def stop_loop():
    pid = read_json(path("state", "idle-loop.json"), {}).get("pid")
    if pid and pid_alive(pid):
        try:
            os.kill(int(pid), 15)
        except OSError:
            pass
    try:
        os.remove(path("state", "idle-loop.json"))
    except OSError:
        pass


def install_loop():
    stop_loop()
    os.makedirs(path("logs"), exist_ok=True)
    command = check_command()[:-1] + ["loop"]
    with open(path("logs", "idle-loop.log"), "a") as out:
        proc = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    write_json(path("state", "idle-loop.json"), {"pid": proc.pid})


def unschedule(mode):
    if mode == "systemd":
        subprocess.run(
            as_root(["systemctl", "disable", "--now", UNIT + ".timer"]), capture_output=True
        )
    elif mode == "cron" and shutil.which("crontab"):
        write_crontab(crontab_lines())
    elif mode == "loop":
        stop_loop()


def choose_mode(wanted):
    if wanted != "auto":
        return wanted
    if has_systemd() and can_be_root():
        return "systemd"
    if shutil.which("crontab"):
        return "cron"
    return "loop"


MODE_WORDS = {
    "systemd": "a systemd timer (survives reboots)",
    "cron": "a crontab entry, every minute (survives reboots)",
    "loop": "a background loop (nohup; does NOT survive a reboot: no systemd or cron here)",
    "none": "nothing scheduled (run `idle.py check` yourself)",
}


def health(config, stored, now):
    """Is the guard watching? Its schedule is in place and its last look is recent."""
    if not config.get("enabled") and not config.get("max_hours"):
        return {"running": False, "why": "auto-stop is off"}
    mode = config.get("mode", "none")
    scheduled, why = True, ""
    if mode == "systemd":
        done = subprocess.run(
            ["systemctl", "is-active", UNIT + ".timer"], capture_output=True, text=True
        )
        scheduled, why = done.returncode == 0, "the systemd timer is " + done.stdout.strip()
    elif mode == "cron":
        scheduled = shutil.which("crontab") is not None and any(
            CRON_MARK in line
            for line in subprocess.run(["crontab", "-l"], capture_output=True, text=True).stdout.splitlines()
        )
        why = "its crontab entry is gone"
    elif mode == "loop":
        scheduled = bool(pid_alive(read_json(path("state", "idle-loop.json"), {}).get("pid") or 0))
        why = "its background loop is not running (a reboot ends it)"
    elif mode == "none":
        scheduled, why = False, "nothing runs the checks"
    last = stored.get("last_check")
    late = float(config.get("poll_seconds", 60)) * 3 + 90
    if scheduled and last is not None and now - last > late:
        scheduled, why = False, f"its last look was {int(now - last)}s ago"
    return {"running": scheduled, "why": "" if scheduled else why, "last_check": last}


def install(args):
    config = load_config()
    old_mode = config.get("mode", "none")
    if args.idle_minutes is None:  # only other settings change
        off = not config.get("enabled") or old_mode == "none"
    else:
        off = str(args.idle_minutes).lower() in ("off", "none", "never")
    if not off and args.idle_minutes is not None:
        minutes = float(args.idle_minutes)
        if minutes <= 0:
            raise SystemExit("idle minutes must be above 0, or off")
        config["idle_minutes"] = minutes
    config["enabled"] = not off
    if getattr(args, "max_hours", None) is not None:
        cap = str(args.max_hours).lower()
        config["max_hours"] = None if cap in ("off", "none", "never", "") else float(cap)
        if config["max_hours"] is not None and config["max_hours"] <= 0:
            raise SystemExit("max hours must be above 0, or off")
    for key in (
        "warn_minutes",
        "poll_seconds",
        "stop_command",
        "jupyter_url",
        "jupyter_token_file",
        "pre_stop",
        "pre_stop_seconds",
        "box_name",
    ):
        value = getattr(args, key, None)
        if value is not None:
            config[key] = value
    follow = getattr(args, "follow", None)
    if follow is not None:  # node 0's sshd, for a node 1.. of a box of several machines
        config["follow"] = None if follow.lower() in ("off", "none", "") else follow
    report_user = getattr(args, "report_user", None)
    if report_user is not None:  # node 1..: report its use to node 0 (idle_peers.py)
        off_words = ("off", "none", "")
        config["report_user"] = None if report_user.lower() in off_words else report_user
    if getattr(args, "report_host_key", None):
        import idle_peers

        idle_peers.pin_node0(args.report_host_key)
    if getattr(args, "node", None) is not None:
        config["node"] = args.node
    # Whose processes are work (idle_work.py): the user the checks run as.
    config["login_uid"] = uid_of(getattr(args, "run_as", None))
    if os.environ.get("JUPYTER_RUNTIME_DIR"):
        config["jupyter_runtime_dirs"] = [os.environ["JUPYTER_RUNTIME_DIR"]]
    if args.notice_dir:
        config["notice_dirs"] = args.notice_dir
    # The checks run while either limit is on: the idle limit or the uptime cap.
    watched = not off or bool(config.get("max_hours"))
    mode = choose_mode(args.mode) if watched else "none"
    # The same way of scheduling is updated in place (the guard installed at boot keeps
    # watching while the bootstrap changes its settings); another one replaces it.
    if mode != old_mode:
        unschedule(old_mode)
    config["mode"] = mode
    write_json(path("state", "idle-config.json"), config)
    # A new limit starts a fresh count, so a lowered limit never stops a box at once.
    state = read_json(path("state", "idle.json"), {})
    state.update(last_active=clock(), warned_at=None, stop_requested_at=None)
    write_json(path("state", "idle.json"), state)
    if mode == "systemd":
        try:
            install_systemd(config, getattr(args, "run_as", None))
        except (OSError, subprocess.SubprocessError) as exc:
            # A box that must never bill by surprise still gets a watch: the next best one.
            log(f"systemd timer failed ({exc!r}); falling back")
            mode = "cron" if shutil.which("crontab") else "loop"
            config["mode"] = mode
            write_json(path("state", "idle-config.json"), config)
    if mode == "cron":
        install_cron()
    elif mode == "loop":
        install_loop()
    stoppable = not watched or can_stop(config)
    if off:
        message = "idle auto-stop is off"
    else:
        message = "idle auto-stop after {}".format(minutes_text(config["idle_minutes"] * 60))
    if config.get("max_hours"):
        message += "; stops after {:g}h of uptime whatever it does".format(config["max_hours"])
    if watched:
        message += ", checked by " + MODE_WORDS[mode]
        if not stoppable:
            message += (
                "; BUT it cannot stop this machine: no root and no passwordless sudo for "
                "`shutdown` (set idle_stop_command, or allow `sudo -n shutdown`)"
            )
    log("install: " + message)
    print(json.dumps({"enabled": not off, "mode": mode, "can_stop": stoppable, "message": message}))
