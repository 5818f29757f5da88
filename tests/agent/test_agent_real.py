"""The idle agent for real: the script itself, a real Jupyter server with a real kernel
that is busy and then idle, and a real SSH terminal through the sshd fixture.

The one difference from a box: the stop action is `--stop-command` (a setting), which
appends to a file here instead of shutting the machine down.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import threading
import time
import uuid

import pytest

from tests.agent.agent_modules import SCRIPT, signals
from tests.sshd import free_port

pytestmark = pytest.mark.slow

TOKEN = "agent-test-token"


def wait_for(predicate, timeout=30.0, every=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"not true within {timeout}s: {predicate}")


@pytest.fixture(scope="module")
def jupyter(tmp_path_factory):
    """A real jupyter_server on 127.0.0.1 with its own runtime dir and root dir."""
    import requests

    base = tmp_path_factory.mktemp("jupyter")
    runtime, root = base / "runtime", base / "notebooks"
    root.mkdir()
    port = free_port()
    # Its kernels' IPython history too (this fixture starts before the isolation fixture).
    # jupyter_lsp asks `npm prefix -g` at start: npm's log goes here too, not to ~/.npm.
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(runtime), "IPYTHONDIR": str(base / "ipython"),
           "npm_config_cache": str(base / "npm")}
    log = (base / "server.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter_server", "--no-browser", "--ip", "127.0.0.1",
         f"--port={port}", f"--IdentityProvider.token={TOKEN}", "--allow-root",
         f"--ServerApp.root_dir={root}"],
        env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"token {TOKEN}"}

    def ready():
        assert proc.poll() is None, (base / "server.log").read_text()[-2000:]
        try:
            return requests.get(url + "/api/status", headers=headers, timeout=2).ok
        except requests.ConnectionError:
            return False

    try:
        wait_for(ready, timeout=60)
        yield {"url": url, "headers": headers, "runtime": runtime, "root": root, "port": port}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Kernel:
    """A kernel started through the REST API; cells run over its websocket."""

    def __init__(self, jupyter):
        import requests

        self.jupyter = jupyter
        reply = requests.post(jupyter["url"] + "/api/kernels", headers=jupyter["headers"],
                              json={}, timeout=30)  # fmt: skip
        reply.raise_for_status()
        self.id = reply.json()["id"]

    def info(self):
        import requests

        got = requests.get(f"{self.jupyter['url']}/api/kernels/{self.id}",
                           headers=self.jupyter["headers"], timeout=10)  # fmt: skip
        return got.json()

    def run(self, code, allow_stdin=False):
        """Send a cell; a thread reads until its execute_reply. Returns the thread."""
        import websocket

        ws_url = self.jupyter["url"].replace("http", "ws") + f"/api/kernels/{self.id}/channels"
        ws = websocket.create_connection(ws_url, header=[f"Authorization: token {TOKEN}"],
                                         timeout=60)  # fmt: skip
        msg_id = uuid.uuid4().hex
        ws.send(json.dumps({
            "header": {"msg_id": msg_id, "username": "test", "session": uuid.uuid4().hex,
                       "msg_type": "execute_request", "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell",
            "content": {"code": code, "silent": False, "store_history": False,
                        "user_expressions": {}, "allow_stdin": allow_stdin},
        }))  # fmt: skip
        finished = threading.Event()

        def read():
            try:
                while True:
                    msg = json.loads(ws.recv())
                    if (msg.get("msg_type") == "execute_reply"
                            and msg["parent_header"].get("msg_id") == msg_id):  # fmt: skip
                        break
            except websocket.WebSocketException:
                pass  # the kernel was deleted mid-cell
            finally:
                ws.close()
                finished.set()

        threading.Thread(target=read, daemon=True).start()
        return finished

    def delete(self):
        import requests

        requests.delete(f"{self.jupyter['url']}/api/kernels/{self.id}",
                        headers=self.jupyter["headers"], timeout=30)  # fmt: skip


@pytest.fixture
def agent(tmp_path, jupyter):
    """Runs the agent script as the box does, with its files under tmp_path."""
    home = tmp_path / "agent-home"
    stops = tmp_path / "stops.txt"
    # HOME too: the agent also looks for Jupyter servers under ~/.local/share/jupyter.
    env = {**os.environ, "GPUBOX_AGENT_HOME": str(home), "HOME": str(tmp_path),
           "JUPYTER_RUNTIME_DIR": str(jupyter["runtime"])}  # fmt: skip
    # Nothing but this test's server: the configured URL is a closed port.
    dead_url = f"http://127.0.0.1:{free_port()}"

    def run(*args):
        done = subprocess.run([sys.executable, str(SCRIPT), *args], env=env,
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout) if done.stdout.strip().startswith("{") else done.stdout

    def install(minutes, warn, mode="none", poll=None):
        args = ["install", "--idle-minutes", str(minutes), "--warn-minutes", str(warn),
                "--mode", mode, "--jupyter-url", dead_url,
                "--stop-command", f"echo stopped >> {shlex.quote(str(stops))}"]  # fmt: skip
        if poll:
            args += ["--poll-seconds", str(poll)]
        return run(*args)

    def configure(**settings):
        file = home / "state" / "idle-config.json"
        file.write_text(json.dumps({**json.loads(file.read_text()), **settings}))

    run.install = install
    run.configure = configure
    run.env = env
    run.home = home
    run.stops = stops
    yield run
    loop_file = home / "state" / "idle-loop.json"
    if loop_file.exists():  # a failed test must not leave the loop polling
        pid = json.loads(loop_file.read_text())["pid"]
        try:
            os.kill(pid, 15)
        except ProcessLookupError:
            pass


def kernel_last_activity(kernel):
    return signals.parse_iso(kernel.info()["last_activity"])


def test_busy_kernel_is_not_idle_then_idle_kernel_warns_and_stops(agent, jupyter):
    agent.install(minutes=0.1, warn=0.05)  # limit 6 s, warning 3 s before
    kernel = Kernel(jupyter)
    try:
        finished = kernel.run("import time\nt = time.time() + 8\nwhile time.time() < t: pass")
        wait_for(lambda: kernel.info()["execution_state"] == "busy")
        time.sleep(6.5)  # longer than the limit, while the cell runs
        result = agent("check")
        assert result["actions"] == []
        state = json.loads((agent.home / "state" / "idle.json").read_text())
        assert any(kernel.id[:8] in reason for reason in state["busy"])
        assert not agent.stops.exists()

        assert finished.wait(30)
        wait_for(lambda: kernel.info()["execution_state"] == "idle")
        went_idle = kernel_last_activity(kernel)
        time.sleep(max(0.0, went_idle + 3.6 - time.time()))
        result = agent("check")
        assert [a[0] for a in result["actions"]] == ["warn"]
        notice = json.loads((agent.home / "state" / "jupyter-notice.json").read_text())
        assert "stops at" in notice["text"] and "gpubox-keep 2h" in notice["text"]
        assert not agent.stops.exists()

        time.sleep(max(0.0, went_idle + 6.3 - time.time()))
        result = agent("check")
        seen = json.loads((agent.home / "state" / "idle.json").read_text())
        assert [a[0] for a in result["actions"]] == ["stop"], (seen["busy"], seen["signals"])
        assert agent.stops.read_text() == "stopped\n"
        log = (agent.home / "logs" / "idle.log").read_text()
        assert "stop: idle for" in log and "no kernel working (1 kernels)" in log
        status = agent("status")
        assert "idle for" in status["last_stop"]["reason"]
        assert status["idle_minutes"] == 0.1 and status["enabled"] is True
    finally:
        kernel.delete()


def test_loop_mode_polls_by_itself_and_off_ends_it(agent, jupyter):
    out = agent.install(minutes=0.05, warn=0.01, mode="loop", poll=0.5)
    assert out["mode"] == "loop" and "does NOT survive a reboot" in out["message"]
    pid = json.loads((agent.home / "state" / "idle-loop.json").read_text())["pid"]
    # `echo stopped >> file` makes the file before it writes the word.
    wait_for(lambda: agent.stops.exists() and "stopped" in agent.stops.read_text(), timeout=60)

    out = agent.install(minutes="off", warn=1)
    assert out == {"enabled": False, "mode": "none", "can_stop": True,
                   "message": "idle auto-stop is off"}  # fmt: skip

    def gone():
        try:
            with open(f"/proc/{pid}/stat") as handle:
                return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
        except FileNotFoundError:
            return True

    wait_for(gone, timeout=10)


@pytest.mark.sshd
def test_interactive_ssh_terminal_counts_as_use_and_is_gone_after_logout(
    agent, jupyter, sshd, tmp_path
):
    agent.install(minutes=30, warn=5)
    known = sshd.write_known_hosts(tmp_path / "known_hosts")
    opened = time.time()
    ssh = subprocess.Popen(
        ["ssh", "-tt", "-i", str(sshd.key_path), "-p", str(sshd.port),
         "-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes",
         "-o", "BatchMode=yes", f"{sshd.user}@{sshd.host}", "tty; sleep 60"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        tty = ssh.stdout.readline().decode().strip()
        assert tty.startswith("/dev/pts/"), tty
        check = agent("check")
        state = json.loads((agent.home / "state" / "idle.json").read_text())
        sessions = {s["tty"]: s for s in state["signals"]["ssh_sessions"]}
        assert tty in sessions
        # The terminal's own time stamps (input/output, as `w` reads them) are this
        # session's, not older: the agent counts it as use from then on.
        assert sessions[tty]["last_activity"] >= opened - 10
        assert check["actions"] == []
    finally:
        ssh.terminate()
        ssh.wait(timeout=10)
    wait_for(lambda: tty not in {s["tty"] for s in signals.read_ssh_sessions()}, timeout=10)
