#!/usr/bin/env python3
"""gpubox-keep: keep this box from stopping itself while you need it.

  gpubox-keep 3h              keep it up for 3 hours (30m, 1h30m, 1d), whatever it does
  gpubox-keep -- CMD ARGS...  run CMD; the box stays up while it runs
  gpubox-keep --pid PID       keep it up while process PID runs
  gpubox-keep off             end every keep
  gpubox-keep                 say what keeps it now

A keep is a small file under ~/.gpubox/keep (GPUBOX_AGENT_HOME moves it) that the idle
agent reads. A process keep records the pid, the process's start time and the boot, so
a pid the system hands to another process later, or a reboot, never counts.
Standard library only, Python >= 3.8.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from agent_files import path, read_json, write_json  # noqa: E402
from proc_table import start_ticks  # noqa: E402

MAX_SECONDS = 7 * 24 * 3600
_UNITS = {"m": 60, "min": 60, "h": 3600, "d": 24 * 3600}
_PART = re.compile(r"(\d+(?:\.\d+)?)(d|h|min|m)")


def boot_id():
    try:
        with open("/proc/sys/kernel/random/boot_id") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def parse_duration(text):
    """'3h' -> 10800 seconds; a bare number is minutes. ValueError with a sentence when wrong."""
    raw = text.strip().lower().replace(" ", "")
    if re.fullmatch(r"\d+(\.\d+)?", raw):
        seconds = float(raw) * 60
    else:
        parts = _PART.findall(raw)
        if not parts or "".join(n + u for n, u in parts) != raw:
            raise ValueError(f"'{text}' is not a duration: write it like 30m, 3h, 1h30m or 1d")
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds < 60:
        raise ValueError(f"'{text}' is less than a minute; to end a keep: gpubox-keep off")
    if seconds > MAX_SECONDS:
        raise ValueError(f"'{text}' is more than a week; keep it for at most 7d")
    return seconds


def keep_for(seconds, now):
    until = now + seconds
    write_json(path("keep", "until.json"), {"kind": "until", "until": until, "made_at": now})
    return until


def keep_process(pid, command, now):
    start = start_ticks(pid)
    if start is None:
        raise ValueError(f"there is no process {pid}")
    marker = {"kind": "process", "pid": int(pid), "start": start, "boot_id": boot_id(),
              "command": command, "made_at": now}  # fmt: skip
    write_json(path("keep", f"pid-{pid}-{start}.json"), marker)
    return marker


def keep_off():
    removed = 0
    for marker in glob.glob(path("keep", "*.json")):
        try:
            os.remove(marker)
            removed += 1
        except OSError:
            pass
    return removed


def marker_alive(marker, now):
    if marker.get("kind") == "until":
        return float(marker.get("until") or 0) > now
    if marker.get("kind") == "process":
        # The same process: same pid, same start time, same boot.
        started = marker.get("start")
        return (
            marker.get("boot_id") == boot_id()
            and started is not None
            and start_ticks(marker.get("pid")) == started
        )
    return False


def clock(moment):
    return time.strftime("%H:%M UTC", time.gmtime(moment))


def describe(marker):
    if marker.get("kind") == "until":
        return "gpubox-keep until " + clock(marker["until"])
    return "gpubox-keep while process {} runs ({})".format(marker["pid"], marker.get("command") or "?")


def live_markers(now):
    """What keeps the box now, in words; markers that keep nothing any more are removed."""
    live = []
    for file in sorted(glob.glob(path("keep", "*.json"))):
        marker = read_json(file, {})
        if marker_alive(marker, now):
            live.append(describe(marker))
        else:
            try:
                os.remove(file)
            except OSError:
                pass
    return live


def own_home():
    try:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_dir
    except (ImportError, KeyError):
        return None


def install_command(python=None):
    """Put `gpubox-keep` on the PATH: /usr/local/bin when writable, else ~/.local/bin
    (GPUBOX_KEEP_BIN_DIR decides instead). Returns the file written, or None.

    With HOME moved away from the account's own home (a scratch setup), the command
    stays inside HOME: one in /usr/local/bin would point into a folder that goes away."""
    folder = os.environ.get("GPUBOX_KEEP_BIN_DIR")
    if not folder:
        writable = os.path.isdir("/usr/local/bin") and os.access("/usr/local/bin", os.W_OK)
        moved = os.path.realpath(os.path.expanduser("~")) != os.path.realpath(own_home() or "~")
        folder = "/usr/local/bin" if writable and not moved else os.path.expanduser("~/.local/bin")
    script = os.path.abspath(__file__)
    text = (
        "#!/bin/sh\n# gpubox-keep: keep this box from its idle auto-stop (gpubox-keep --help)\n"
        f"GPUBOX_AGENT_HOME=\"${{GPUBOX_AGENT_HOME:-{path()}}}\"\nexport GPUBOX_AGENT_HOME\n"
        f"exec \"{python or sys.executable or 'python3'}\" \"{script}\" \"$@\"\n"
    )
    target = os.path.join(folder, "gpubox-keep")
    try:
        os.makedirs(folder, exist_ok=True)
        with open(target + ".tmp", "w") as handle:
            handle.write(text)
        os.chmod(target + ".tmp", 0o755)
        os.replace(target + ".tmp", target)
    except OSError:
        return None
    return target


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    command = []
    if "--" in argv:
        at = argv.index("--")
        argv, command = argv[:at], argv[at + 1 :]
    parser = argparse.ArgumentParser(prog="gpubox-keep", description=__doc__.split("\n")[0],
                                     usage="gpubox-keep [DURATION | off | --pid PID | -- CMD ...]",
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n", 1)[1].split("\n\n")[0])  # fmt: skip
    parser.add_argument("duration", nargs="?", help="how long: 30m, 3h, 1d; or off")
    parser.add_argument("--pid", type=int, help="keep the box up while this process runs")
    parser.add_argument("--json", action="store_true", help="answer in JSON (for gpubox)")
    args = parser.parse_args(argv)
    now = time.time()

    def answer(message, **extra):
        print(json.dumps({"message": message, **extra}) if args.json else message)

    try:
        if command:
            keep_process(os.getpid(), " ".join(command)[:200], now)
            try:
                os.execvp(command[0], command)  # same pid, same start time: the keep lasts while it runs
            except OSError as exc:
                print(f"gpubox-keep: cannot run {command[0]}: {exc}", file=sys.stderr)
                return 127
        if args.pid:
            marker = keep_process(args.pid, "", now)
            answer(f"the box stays up while process {marker['pid']} runs")
        elif args.duration and args.duration.lower() in ("off", "none", "no", "stop"):
            keep_off()
            answer("no keep any more: the box stops itself when idle again", keeps=[])
        elif args.duration:
            until = keep_for(parse_duration(args.duration), now)
            answer(f"the box stays up until {clock(until)}, whatever it does", until=until)
        else:
            keeps = live_markers(now)
            answer("kept by: " + "; ".join(keeps) if keeps else "nothing keeps the box up", keeps=keeps)
    except ValueError as exc:
        print(f"gpubox-keep: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
