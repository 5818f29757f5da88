"""What the idle agent reads on the box: Jupyter kernels, SSH terminals, GPUs, keep-alives."""

from __future__ import annotations

import datetime
import glob
import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request

from agent_files import path, pid_alive, read_json


def parse_iso(text):
    if not text:
        return None
    text = text.replace("Z", "+00:00")
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)  # noqa: UP017 (runs on Python 3.8)
    return moment.timestamp()


def jupyter_servers(config):
    """(url, token, root_dir) of each Jupyter server: the runtime files, then the config."""
    dirs = list(config.get("jupyter_runtime_dirs") or [])
    if os.environ.get("JUPYTER_RUNTIME_DIR"):
        dirs.append(os.environ["JUPYTER_RUNTIME_DIR"])
    dirs.append(os.path.expanduser("~/.local/share/jupyter/runtime"))
    servers, seen = [], set()
    for folder in dirs:
        for info_file in sorted(glob.glob(os.path.join(folder, "jpserver-*.json"))):
            info = read_json(info_file, {})
            url = (info.get("url") or "").rstrip("/")
            if not url or url in seen or not pid_alive(info.get("pid")):
                continue
            seen.add(url)
            servers.append((url, info.get("token") or "", info.get("root_dir") or ""))
    url = (config.get("jupyter_url") or "").rstrip("/")
    if url and url not in seen:
        token = os.environ.get("GPUBOX_JUPYTER_TOKEN", "")
        token_file = config.get("jupyter_token_file")
        if not token and token_file and os.path.exists(os.path.expanduser(token_file)):
            with open(os.path.expanduser(token_file)) as handle:
                token = handle.read().strip()
        servers.append((url, token, ""))
    return servers


def read_kernels(config):
    """Kernels of every Jupyter server; errors say which server could not be read."""
    kernels, errors, roots = [], [], []
    for url, token, root in jupyter_servers(config):
        request = urllib.request.Request(url + "/api/kernels")
        if token:
            request.add_header("Authorization", "token " + token)
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                listing = json.loads(response.read().decode())
        except urllib.error.HTTPError as exc:
            errors.append(f"{url}: HTTP {exc.code}")
            continue
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, ConnectionRefusedError):
                continue  # no server there: no kernels, nothing to judge
            errors.append(f"{url}: {reason}")
            continue
        if root:
            roots.append(root)
        for kernel in listing:
            kernels.append(
                {
                    "id": kernel.get("id", "")[:8],
                    "state": kernel.get("execution_state", ""),
                    "last_activity": parse_iso(kernel.get("last_activity")),
                }
            )
    return kernels, errors, roots


def read_ssh_sessions():
    """Interactive SSH sessions: sshd's per-session process is titled 'sshd: user@pts/N'."""
    sessions = []
    for cmdline_file in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            with open(cmdline_file, "rb") as handle:
                title = handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if not title.startswith(("sshd", "sshd-session")) or "@pts/" not in title:
            continue
        tty = "/dev/" + title.split("@", 1)[1].split()[0]
        try:
            info = os.stat(tty)
        except OSError:
            continue
        # The kernel stamps a tty on input (atime) and output (mtime): `w`'s idle column.
        sessions.append({"tty": tty, "last_activity": max(info.st_atime, info.st_mtime)})
    return sessions


def read_gpu_utilisation():
    """Per-GPU utilisation in percent, or None where there is no nvidia-smi."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
        return [float(v) for v in out.split() if v.replace(".", "", 1).isdigit()]
    except (OSError, subprocess.SubprocessError, ValueError):
        return [100.0]  # a GPU we cannot read might be working: never stop on it


def read_keep_alive():
    live = []
    for marker in glob.glob(path("keep-alive", "*")):
        try:
            with open(marker) as handle:
                pid = handle.read().strip()
        except OSError:
            continue
        if pid_alive(pid):
            live.append(int(pid))
        else:
            os.remove(marker)  # its process is gone: it keeps nothing alive
    return live


def boot_time():
    try:
        with open("/proc/stat") as handle:
            for line in handle:
                if line.startswith("btime "):
                    return float(line.split()[1])
    except OSError:
        pass
    return None


def read_signals(config):
    kernels, errors, roots = read_kernels(config)
    return {
        "kernels": kernels,
        "jupyter_errors": errors,
        "jupyter_roots": roots,
        "ssh_sessions": read_ssh_sessions(),
        "gpu_utilisation": read_gpu_utilisation(),
        "keep_alive": read_keep_alive(),
        "boot_time": boot_time(),
    }
