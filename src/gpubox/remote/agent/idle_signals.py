"""What the idle agent reads on the box: Jupyter kernels and terminals, SSH terminals,
GPUs, processes that use the CPU, and gpubox-keep markers.

A reading that cannot be taken is never guessed: it goes into "unknown" with the
reason, and the decision then waits twice the limit (idle_decision.py).
"""

from __future__ import annotations

import datetime
import glob
import json
import os
import shutil
import socket
import subprocess
import urllib.error
import urllib.request

from agent_files import path, pid_alive, read_json, write_json
from idle_work import judge
from keep import live_markers
from proc_table import cpu_usage, read_processes, uptime

try:
    from idle_peers import read_reports
except ImportError:  # the guard from boot ships without it; the bootstrap brings it
    def read_reports(config, now):
        return [], ["node reports: this agent lacks idle_peers.py (`gpubox up NAME` again)"]

# A process of the box's users that used this much of a core since the last poll is
# work (a `nohup python train.py`, a loop in tmux); whose processes count: idle_work.py.
PROCESS_CPU_PERCENT = 20.0
JUPYTER_SERVER_WORDS = ("jupyter-lab", "jupyter-server", "jupyter-notebook", "jupyterlab",
                        "jupyter_server", "jupyter lab", "jupyter server", "jupyter notebook")  # fmt: skip


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
    """(url, token, root_dir, pid) of each Jupyter server: the runtime files, then the config."""
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
            servers.append((url, info.get("token") or "", info.get("root_dir") or "", info.get("pid")))
    url = (config.get("jupyter_url") or "").rstrip("/")
    if url and url not in seen:
        token = os.environ.get("GPUBOX_JUPYTER_TOKEN", "")
        token_file = config.get("jupyter_token_file")
        if not token and token_file and os.path.exists(os.path.expanduser(token_file)):
            with open(os.path.expanduser(token_file)) as handle:
                token = handle.read().strip()
        servers.append((url, token, "", None))
    return servers


def _get_json(url, token):
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", "token " + token)
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read().decode())


def read_jupyter(config):
    """Kernels and terminals of every Jupyter server; errors say which could not be read."""
    kernels, terminals, errors, roots, pids = [], [], [], [], []
    for url, token, root, pid in jupyter_servers(config):
        try:
            listing = _get_json(url + "/api/kernels", token)
        except urllib.error.HTTPError as exc:
            errors.append(f"Jupyter at {url}: HTTP {exc.code}")
            continue
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, ConnectionRefusedError):
                continue  # no server there: no kernels, nothing to judge
            errors.append(f"Jupyter at {url}: {reason}")
            continue
        if root:
            roots.append(root)
        if pid:
            pids.append(int(pid))
        for kernel in listing:
            kernels.append({"id": kernel.get("id", ""), "state": kernel.get("execution_state", ""),
                            "last_activity": parse_iso(kernel.get("last_activity"))})  # fmt: skip
        try:
            found = _get_json(url + "/api/terminals", token)
        except urllib.error.HTTPError:
            found = []  # terminals switched off on this server: none to count
        except (urllib.error.URLError, OSError, ValueError) as exc:
            errors.append(f"Jupyter terminals at {url}: {getattr(exc, 'reason', exc)}")
            found = []
        for terminal in found:
            terminals.append({"name": terminal.get("name", ""),
                              "last_activity": parse_iso(terminal.get("last_activity"))})  # fmt: skip
    return {"kernels": kernels, "terminals": terminals, "errors": errors, "roots": roots,
            "server_pids": pids}  # fmt: skip


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
    """(per-GPU utilisation in percent or None where there is no nvidia-smi, error or None)."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None, None
    try:
        done = subprocess.run(
            [smi, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=20,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"GPU: nvidia-smi did not run ({exc})"
    words = done.stdout.split()
    if done.returncode != 0 or not words:
        said = " ".join((done.stdout + done.stderr).split())[:200] or "no output"
        return None, f"GPU: nvidia-smi failed (exit {done.returncode}): {said}"
    try:
        return [float(v) for v in words], None
    except ValueError:
        # "[N/A]" or "[Unknown Error]": a GPU that cannot say what it does.
        return None, "GPU: nvidia-smi gave no utilisation: " + " ".join(words)[:200]


def boot_time():
    try:
        with open("/proc/stat") as handle:
            for line in handle:
                if line.startswith("btime "):
                    return float(line.split()[1])
    except OSError:
        pass
    return None


def _is_jupyter_server(command):
    return any(word in command for word in JUPYTER_SERVER_WORDS)


def read_cpu_work(config, kernels, server_pids, remember):
    """Each kernel's CPU share (set on the kernel dicts) and the processes at work:
    those over the bar that someone using the box runs (idle_work.py says whose).

    CPU shares are measured since the previous poll: the sample is kept in
    state/cpu-sample.json between polls (`remember`; a status look leaves it alone).
    """
    proc_dir = config.get("proc_dir") or "/proc"
    procs, error = read_processes(proc_dir)
    try:
        up = uptime(proc_dir)
    except (OSError, ValueError, IndexError) as exc:
        procs, error = [], error or f"cannot read {proc_dir}/uptime ({exc})"
    if error:
        for kernel in kernels:
            kernel["cpu_percent"] = None
        return [], ["processes: " + error]
    sample_file = path("state", "cpu-sample.json")
    usage = cpu_usage(procs, read_json(sample_file, {}), up)
    if remember:
        write_json(sample_file, {"uptime": up, "procs": {str(p["pid"]): [p["start"], p["ticks"]]
                                                          for p in procs}})  # fmt: skip
    unknown = []
    by_kernel = {}
    for proc in procs:
        for word in proc["command"].split():
            name = os.path.basename(word)
            if name.startswith("kernel-") and name.endswith(".json"):
                by_kernel[name[len("kernel-"):-len(".json")]] = proc["pid"]
    for kernel in kernels:
        pid = by_kernel.get(kernel["id"])
        kernel["pid"] = pid
        kernel["cpu_percent"] = usage.get(pid) if pid else None
        if kernel["state"] == "busy" and pid is None:
            unknown.append(f"kernel {kernel['id'][:8]}: its process was not found")
    # Kernels a server lists are judged above; a kernel process no server lists (its
    # server died) is judged like any other process.
    listed = {kernel["pid"] for kernel in kernels if kernel["pid"]}
    skip = set(server_pids) | listed
    limit = float(config.get("process_cpu_percent", PROCESS_CPU_PERCENT))
    whose = judge(config, procs, server_pids, proc_dir)
    working = []
    for proc in procs:
        percent = usage.get(proc["pid"])
        if percent is None or percent < limit or proc["pid"] in skip:
            continue
        if _is_jupyter_server(proc["command"]):
            continue
        why = whose(proc)
        if why:
            working.append({"pid": proc["pid"], "uid": proc["uid"], "cpu_percent": round(percent, 1),
                            "command": proc["command"][:80], "whose": why})  # fmt: skip
    return working, unknown


def node0_up(config, timeout=3.0):
    """A node other than node 0 of a box of several machines (config "follow": node 0's
    HOST:PORT) is in use while node 0's sshd answers: the box is idle only when every
    node is, and node 0 (Jupyter, rank 0) decides. Node 0 gone (stopped: nothing answers)
    lets this node's own idle count run out, then it stops too."""
    follow = config.get("follow")
    if not follow:
        return []
    host, _, port = str(follow).rpartition(":")
    host = host.strip("[]")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as conn:
            conn.settimeout(timeout)
            banner = conn.recv(64)
    except (OSError, ValueError):
        return []
    if not banner.startswith(b"SSH-"):  # something else took its address: not node 0
        return []
    return [f"node 0 ({host}) is up: this node stops only after it"]


def read_signals(config, now, remember=True):
    jupyter = read_jupyter(config)
    gpus, gpu_error = read_gpu_utilisation()
    processes, cpu_unknown = read_cpu_work(config, jupyter["kernels"], jupyter["server_pids"],
                                           remember)  # fmt: skip
    unknown = jupyter["errors"] + cpu_unknown + ([gpu_error] if gpu_error else [])
    for kernel in jupyter["kernels"]:
        kernel["id"] = kernel["id"][:8]
    peers, peers_unknown = read_reports(config, now) if config.get("peers") else ([], [])
    return {
        "kernels": jupyter["kernels"],
        "terminals": jupyter["terminals"],
        "jupyter_roots": jupyter["roots"],
        "ssh_sessions": read_ssh_sessions(),
        "gpu_utilisation": gpus,
        "processes": processes,
        "keep": live_markers(now),
        "follow": node0_up(config),  # a node 1..: node 0 is up (left out of its reports)
        "peers": peers,  # node 0: what the other nodes reported (idle_peers.py)
        "unknown": unknown + peers_unknown,
        "boot_time": boot_time(),
    }
