"""Files of the idle agent under ~/.gpubox (GPUBOX_AGENT_HOME moves them); stdlib only, Python >= 3.8."""

from __future__ import annotations

import datetime
import json
import os
import time

DEFAULTS = {
    "enabled": True,
    "idle_minutes": 60,
    "warn_minutes": 5,
    "poll_seconds": 60,
    "gpu_threshold": 5.0,
    "stop_command": "",  # empty: shutdown (with sudo -n when not root)
    "max_hours": None,  # stop after this much uptime, busy or not
    "pre_stop": "",  # a command run before any stop (save work), as the box's user
    "pre_stop_seconds": 300,
    "box_name": "",
    "jupyter_url": "http://127.0.0.1:8888",
    "jupyter_token_file": "",
    "jupyter_runtime_dirs": [],
    "notice_dirs": [],
    "mode": "none",
}


def agent_home():
    return os.environ.get("GPUBOX_AGENT_HOME") or os.path.expanduser("~/.gpubox")


def path(*parts):
    return os.path.join(agent_home(), *parts)


def read_json(file, default):
    try:
        with open(file) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return default


def write_json(file, data):
    os.makedirs(os.path.dirname(file), exist_ok=True)
    tmp = file + ".tmp"
    with open(tmp, "w") as handle:
        json.dump(data, handle, indent=1, sort_keys=True)
    os.replace(tmp, file)  # never a half-written file for a reader


def load_config():
    config = dict(DEFAULTS)
    config.update(read_json(path("state", "idle-config.json"), {}))
    # Settings a test (or an admin) passes at run time win over the file.
    if os.environ.get("GPUBOX_IDLE_STOP_COMMAND"):
        config["stop_command"] = os.environ["GPUBOX_IDLE_STOP_COMMAND"]
    if os.environ.get("GPUBOX_JUPYTER_URL"):
        config["jupyter_url"] = os.environ["GPUBOX_JUPYTER_URL"]
    if os.environ.get("GPUBOX_IDLE_POLL_SECONDS"):
        config["poll_seconds"] = float(os.environ["GPUBOX_IDLE_POLL_SECONDS"])
    return config


def clock():
    """Now, in epoch seconds. GPUBOX_AGENT_CLOCK names a file holding the time instead:
    how a test lets hours pass in a second without touching the machine's clock."""
    fake = os.environ.get("GPUBOX_AGENT_CLOCK")
    if fake:
        try:
            with open(fake) as handle:
                return float(handle.read().strip())
        except (OSError, ValueError):
            pass
    return time.time()


def log(message, now=None):
    os.makedirs(path("logs"), exist_ok=True)
    stamp = datetime.datetime.fromtimestamp(now or clock(), datetime.timezone.utc)  # noqa: UP017 (runs on Python 3.8)
    with open(path("logs", "idle.log"), "a") as handle:
        handle.write(stamp.strftime("%Y-%m-%dT%H:%M:%SZ") + " " + message + "\n")


def pid_alive(pid):
    try:
        os.kill(int(pid), 0)
    except PermissionError:
        return True  # someone else's process, alive
    except (OSError, TypeError, ValueError):
        return False
    return True
