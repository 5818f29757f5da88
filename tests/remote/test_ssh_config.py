"""The ssh config gpubox writes, and the one line it may add to ~/.ssh/config."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from gpubox.errors import ConfirmationRequired
from gpubox.providers.base import SshEndpoint
from gpubox.remote.ssh_config import include_in_user_config, write_ssh_config


def test_entries_pin_per_box_and_skip_local(settings):
    boxes = {
        "gpu1": SshEndpoint(host="203.0.113.7", user="ubuntu", key_path=Path("/k/a b.pem"),
                            proxy_jump="jump@bastion:2222"),
        "here": SshEndpoint(host="localhost", user="me", local=True),
    }
    path = write_ssh_config(settings, boxes.items())
    text = path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "Host gpu1 gpubox-gpu1\n" in text and "here" not in text
    for line in ("HostName 203.0.113.7", "Port 22", "User ubuntu", 'IdentityFile "/k/a b.pem"',
                 "IdentitiesOnly yes", f"UserKnownHostsFile {settings.known_hosts_path}",
                 "HostKeyAlias gpubox-gpu1", "StrictHostKeyChecking yes",
                 "ProxyJump jump@bastion:2222"):
        assert f"    {line}\n" in text


def test_include_creates_a_private_ssh_dir_and_config(settings, tmp_path):
    ssh_dir = tmp_path / "home" / ".ssh"
    with pytest.raises(ConfirmationRequired):
        include_in_user_config(settings, consent=False, user_ssh_dir=ssh_dir)
    assert not ssh_dir.exists()
    assert include_in_user_config(settings, consent=True, user_ssh_dir=ssh_dir)
    assert stat.S_IMODE(ssh_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((ssh_dir / "config").stat().st_mode) == 0o600
    assert f"Include {settings.ssh_config_path}\n" in (ssh_dir / "config").read_text()
    # already there: no question needed, nothing changes
    assert include_in_user_config(settings, consent=False, user_ssh_dir=ssh_dir) is False
