"""The idle warning in the open JupyterLab page: a real JupyterLab server with the notice
extension installed as the bootstrap installs it (into a prefix; here one under
tmp_path), the real agent deciding to warn, and headless Chromium driven over the
DevTools protocol showing the banner, then hiding it once the box is used again.
The screenshot is kept under the test's tmp_path (jupyterlab-idle-warning.png).
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.agent.agent_modules import AGENT_DIR, SCRIPT
from tests.sshd import free_port

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
TOKEN = "notice-test-token"


def wait_for(predicate, timeout=60.0, every=0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"not true within {timeout}s: {predicate}")


class Page:
    """One Chromium tab over the DevTools protocol (websocket-client, a Jupyter dependency)."""

    def __init__(self, ws_url):
        import websocket

        self.ws = websocket.create_connection(ws_url, timeout=60, suppress_origin=True)
        self.next_id = 0

    def call(self, method, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == self.next_id:
                assert "error" not in reply, reply
                return reply["result"]

    def text(self, script):
        return self.call("Runtime.evaluate", expression=script, returnByValue=True)["result"].get("value")


@pytest.fixture
def lab(tmp_path):
    """JupyterLab with the notice extension, the agent's files under tmp_path."""
    import requests

    prefix = tmp_path / "prefix"
    subprocess.run([sys.executable, str(AGENT_DIR / "jupyter_notice.py"), "install",
                    "--data-dir", str(prefix / "share" / "jupyter"),
                    "--config-dir", str(prefix / "etc" / "jupyter"),
                    "--lib-dir", str(prefix / "lib")], check=True, capture_output=True)  # fmt: skip
    root, runtime, agent_home = tmp_path / "notebooks", tmp_path / "runtime", tmp_path / "agent-home"
    root.mkdir()
    env = {**os.environ, "HOME": str(tmp_path), "JUPYTER_RUNTIME_DIR": str(runtime),
           "GPUBOX_AGENT_HOME": str(agent_home), "GPUBOX_NOTICE_POLL_SECONDS": "1",
           "JUPYTER_PATH": str(prefix / "share" / "jupyter"),
           "JUPYTER_CONFIG_PATH": str(prefix / "etc" / "jupyter"),
           "PYTHONPATH": os.pathsep.join([str(prefix / "lib"), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    port = free_port()
    log = (tmp_path / "lab.log").open("ab")
    # No network beyond loopback: no news, no update checks.
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip", "127.0.0.1",
         f"--port={port}", f"--IdentityProvider.token={TOKEN}", "--allow-root",
         f"--ServerApp.root_dir={root}", "--LabApp.news_url=None",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def ready():
        assert server.poll() is None, (tmp_path / "lab.log").read_text()[-2000:]
        try:
            return requests.get(url + "/api/status", headers={"Authorization": f"token {TOKEN}"},
                                timeout=2).ok  # fmt: skip
        except requests.ConnectionError:
            return False

    try:
        wait_for(ready)
        yield {"url": url, "env": env, "agent_home": agent_home, "log": tmp_path / "lab.log"}
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_the_open_jupyterlab_page_shows_the_warning_and_drops_it_when_the_box_is_used(lab, tmp_path):
    import requests

    if not Path(CHROMIUM).exists():
        pytest.skip("needs headless Chromium (/usr/bin/chromium)")

    def agent(*args):
        done = subprocess.run([sys.executable, str(SCRIPT), *args], env=lab["env"], check=True,
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        return json.loads(done.stdout.strip().splitlines()[-1])

    # 30 s limit, warning 27 s before: any check from 3 s on warns. The stop only writes here.
    agent("install", "--idle-minutes", "0.5", "--warn-minutes", "0.45", "--mode", "none",
          "--box-name", "box1", "--stop-command", f"echo stopped >> {tmp_path / 'stops'}",
          "--jupyter-url", lab["url"])  # fmt: skip

    debug_port = free_port()
    browser = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,800", f"--user-data-dir={tmp_path / 'profile'}",
         "--remote-debugging-address=127.0.0.1", f"--remote-debugging-port={debug_port}",
         f"{lab['url']}/lab?token={TOKEN}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
        env={**os.environ, "HOME": str(tmp_path / "browser-home")},  # its dconf, caches
    )  # fmt: skip
    try:
        def page_target():
            try:
                tabs = requests.get(f"http://127.0.0.1:{debug_port}/json/list", timeout=2).json()
            except requests.ConnectionError:
                return None
            return next((t["webSocketDebuggerUrl"] for t in tabs if t.get("type") == "page"), None)

        page = Page(wait_for(page_target))
        # JupyterLab is up (its file browser drawn) and shows no warning yet.
        wait_for(lambda: page.text("!!document.querySelector('.jp-DirListing')"))
        assert page.text("document.getElementById('gpubox-notice') === null")

        wait_for(lambda: time.time() - (lab["agent_home"] / "state" / "idle.json").stat().st_mtime > 3.5)
        assert [kind for kind, _ in agent("check")["actions"]] == ["warn"]
        text = wait_for(lambda: page.text(
            "(document.getElementById('gpubox-notice') || {}).innerText"), timeout=30)  # fmt: skip
        assert re.search(r"gpubox: box box1 stops at \d\d:\d\d UTC \(in \d+s\)", text), text
        assert "`gpubox keep box1 2h` on your laptop" in text and "`gpubox-keep 2h` on the box" in text
        assert "NAME" not in text and "type in a terminal" not in text
        # JupyterLab's own notification shows it too (its toast cuts long texts; the bell in
        # the status bar keeps the whole one).
        toasts = "Array.from(document.querySelectorAll('.Toastify__toast')).map(t => t.innerText).join('|')"
        assert "gpubox: box box1 stops at" in wait_for(lambda: page.text(toasts), timeout=10)
        shot = tmp_path / "jupyterlab-idle-warning.png"
        shot.write_bytes(base64.b64decode(page.call("Page.captureScreenshot", format="png")["data"]))
        assert shot.stat().st_size > 10_000

        # Someone opens a terminal in JupyterLab: the box is in use, the banner goes.
        made = requests.post(lab["url"] + "/api/terminals",
                             headers={"Authorization": f"token {TOKEN}"}, timeout=30)  # fmt: skip
        assert made.ok
        assert [kind for kind, _ in agent("check")["actions"]] == ["clear"]
        wait_for(lambda: page.text("document.getElementById('gpubox-notice') === null"), timeout=30)
        wait_for(lambda: "box box1 stops at" not in page.text(toasts), timeout=10)
        assert not (tmp_path / "stops").exists()
    finally:
        browser.terminate()
        try:
            browser.wait(timeout=15)
        except subprocess.TimeoutExpired:
            browser.kill()
            browser.wait()
