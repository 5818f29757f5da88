"""`gpubox ssh`, `gpubox ssh-config` as a user runs them: the installed command, a real
sshd, the real ssh client (the CLI execs it)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from gpubox.providers.base import BoxSpec
from gpubox.providers.ssh import SshProvider
from gpubox.remote import hostkeys
from gpubox.remote.ssh import close_master

pytestmark = pytest.mark.sshd


def gpubox(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gpubox", *args], capture_output=True, text=True, timeout=60,
        stdin=subprocess.DEVNULL, env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


@pytest.fixture
def host(sshd, settings):
    provider = SshProvider(settings)
    box = provider.launch(BoxSpec(name="h1", provider="ssh", host=f"{sshd.user}@127.0.0.1:"
                                  f"{sshd.port}", key_path=sshd.key_path))
    hostkeys.forget_host_key(settings, "h1")  # so the CLI's first connection pins it
    yield box
    close_master(provider.endpoint(box), settings, "h1")


def test_ssh_runs_a_command_and_pins_on_first_use(sshd, settings, host):
    result = gpubox("ssh", "h1", "--", "echo", "far", "$((40 + 2))")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "far 42\n"
    assert hostkeys.fingerprint(sshd.host_key_line) in result.stderr
    assert hostkeys.pinned_keys(settings, "h1") == [sshd.host_key_line]


def test_ssh_passes_the_remote_exit_code(host):
    assert gpubox("ssh", "h1", "--", "exit", "5").returncode == 5


def test_forget_host_key_says_what_it_removes(sshd, settings, host):
    hostkeys.ensure_host_key(SshProvider(settings).endpoint(host), settings, "h1")
    result = gpubox("ssh", "h1", "--forget-host-key")
    assert result.returncode == 0
    assert hostkeys.fingerprint(sshd.host_key_line) in result.stderr
    assert "only when you know why" in result.stderr
    assert hostkeys.pinned_keys(settings, "h1") == []


def test_ssh_to_an_unknown_box_is_one_red_line(host):
    result = gpubox("ssh", "h11")
    assert result.returncode == 1
    assert "error: no box called 'h11'" in result.stderr and "did you mean 'h1'" in result.stderr
    assert "Traceback" not in result.stderr


def test_ssh_config_entry_works_with_plain_ssh(sshd, settings, host):
    result = gpubox("ssh-config")
    assert result.returncode == 0, result.stderr
    path = settings.ssh_config_path
    text = path.read_text()
    assert "Host h1 gpubox-h1" in text and "StrictHostKeyChecking yes" in text
    hostkeys.ensure_host_key(SshProvider(settings).endpoint(host), settings, "h1")
    plain = subprocess.run(["ssh", "-F", str(path), "-o", "BatchMode=yes", "h1", "echo", "plain"],
                           capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert plain.stdout == "plain\n", plain.stderr


def test_ssh_config_install_needs_yes_then_includes_once(settings, host, tmp_path):
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    user_config = home / ".ssh" / "config"
    user_config.write_text("Host old\n    HostName old.example\n")
    refused = gpubox("ssh-config", "--install", env={"HOME": str(home)})
    assert refused.returncode != 0 and "needs your yes" in refused.stderr
    assert user_config.read_text() == "Host old\n    HostName old.example\n"
    for _ in range(2):
        assert gpubox("ssh-config", "--install", "--yes", env={"HOME": str(home)}).returncode == 0
    text = user_config.read_text()
    include = f"Include {settings.ssh_config_path}"
    assert text.count(include) == 1
    assert text.index(include) < text.index("Host old")  # at the top, outside any Host block
    backups = list((home / ".ssh").glob("config.gpubox-backup-*"))
    assert len(backups) == 1 and "Host old" in backups[0].read_text()


def test_jupyter_stop_without_a_tunnel_says_so(host):
    result = gpubox("jupyter", "h1", "--stop")
    assert result.returncode == 0 and "no tunnel" in result.stderr
