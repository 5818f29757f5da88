"""mount_volume.sh: format a data volume only when it is new, mount it, fstab with nofail.

There is no block device to attach where the tests run (and no root to mount one), so
blkid, mkfs.ext4, mount, mountpoint, findmnt, resize2fs, chown and sudo are FAKES planted first
on PATH: small scripts that keep "the filesystem" in a file and log each call. What is
real: the script itself, run by bash through gpubox's LocalRunner, finding the device by
its volume id under a by-id folder, deciding new vs existing, and writing the fstab line.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from gpubox.errors import GpuboxError
from gpubox.remote.data_volume import mount, mount_script
from gpubox.remote.runner import LocalRunner

VOLUME_ID = "vol-0abc123def4567890"

FAKES = {
    # blkid -o value -s TYPE|UUID DEV: what mkfs left, or nothing (exit 2) for a new disk.
    "blkid": """[ -f "$FAKE_STATE/blkid-broken" ] && exit 4
state="$FAKE_STATE/fs"; [ -f "$state" ] || exit 2
case "$4" in TYPE) sed -n 1p "$state" ;; UUID) sed -n 2p "$state" ;; esac""",
    "mkfs.ext4": 'printf "ext4\\n1111-2222\\n" >"$FAKE_STATE/fs"',
    "mountpoint": '[ -f "$FAKE_STATE/mounted" ]',
    "mount": 'echo "$FAKE_DEVICE" >"$FAKE_STATE/mounted"',
    "findmnt": 'cat "$FAKE_STATE/mounted"',
    "resize2fs": "true",
    "chown": "true",
    "sudo": '[ "$1" = -n ] && shift; exec "$@"',
}


@pytest.fixture
def host(tmp_path, monkeypatch):
    """A fake box: a by-id folder naming the volume's device, fakes first on PATH, a HOME."""
    bin_dir, state, by_id, home = (tmp_path / d for d in ("bin", "state", "by-id", "home"))
    for d in (bin_dir, state, by_id, home):
        d.mkdir()
    log = state / "calls"
    for name, body in FAKES.items():
        path = bin_dir / name
        path.write_text(f'#!/bin/sh\necho "{name} $*" >>"{log}"\n{body}\n')
        path.chmod(0o755)
    device = tmp_path / "nvme1n1"
    device.write_text("")
    (by_id / f"nvme-Amazon_Elastic_Block_Store_{VOLUME_ID.replace('-', '')}").symlink_to(device)
    fstab = tmp_path / "fstab"
    fstab.write_text("LABEL=cloudimg-rootfs / ext4 defaults 0 1\n")
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setenv("FAKE_STATE", str(state))
    monkeypatch.setenv("FAKE_DEVICE", str((tmp_path / "nvme1n1").resolve()))
    monkeypatch.setenv("GPUBOX_DISK_BY_ID", str(by_id))
    monkeypatch.setenv("GPUBOX_FSTAB", str(fstab))
    monkeypatch.setenv("GPUBOX_DEVICE_WAIT", "0")
    monkeypatch.setenv("HOME", str(home))
    return {"state": state, "fstab": fstab, "home": home, "device": device, "log": log}




def calls(host) -> list[str]:
    return host["log"].read_text().splitlines()


def test_a_new_volume_is_formatted_mounted_and_put_in_fstab_once(host):
    first = mount(LocalRunner(), VOLUME_ID, "data")
    assert first.status == "formatted" and first.device == str(host["device"].resolve())
    assert any(c.startswith("mkfs.ext4 -q -L gpubox-data") for c in calls(host))
    assert (host["home"] / "data").is_dir()
    line = f"UUID=1111-2222 {host['home']}/data ext4 defaults,nofail,x-systemd.device-timeout=10s 0 2"
    assert host["fstab"].read_text().splitlines()[1:] == [line]
    # Again (a second `up`, or after a reboot): nothing formatted, fstab unchanged.
    host["log"].write_text("")
    again = mount(LocalRunner(), VOLUME_ID, "data")
    assert again.status == "existing"
    assert not any(c.startswith(("mkfs", "mount ")) for c in calls(host))
    assert host["fstab"].read_text().splitlines()[1:] == [line]


def test_a_volume_with_a_filesystem_is_never_formatted(host):
    (host["state"] / "fs").write_text("ext4\n3333-4444\n")  # a volume another box used
    mounted = mount(LocalRunner(), VOLUME_ID, "data")
    assert mounted.status == "existing"
    assert not any(c.startswith("mkfs") for c in calls(host))
    assert "UUID=3333-4444 " in host["fstab"].read_text()
    assert any(c.startswith("resize2fs") for c in calls(host))  # grown since: fs follows


def test_no_device_for_the_volume_is_an_error_that_names_it(host):
    with pytest.raises(GpuboxError) as failed:
        mount(LocalRunner(), "vol-0ffffffffffffffff", "data")
    assert "no device for it appeared" in failed.value.message
    assert "vol-0ffffffffffffffff" in failed.value.message and "kept" in failed.value.hint
    assert "UUID" not in host["fstab"].read_text()


def test_files_already_in_the_mount_folder_are_never_hidden(host):
    (host["home"] / "data").mkdir()
    (host["home"] / "data" / "notes.txt").write_text("copied here earlier")
    with pytest.raises(GpuboxError) as failed:
        mount(LocalRunner(), VOLUME_ID, "data")
    assert "already has files" in failed.value.message
    assert not any(c.startswith(("mkfs", "mount ")) for c in calls(host))
    assert (host["home"] / "data" / "notes.txt").exists()


def test_a_folder_that_holds_another_disk_is_refused(host):
    (host["state"] / "mounted").write_text("/dev/nvme9n1\n")  # another volume is there
    with pytest.raises(GpuboxError) as failed:
        mount(LocalRunner(), VOLUME_ID, "data")
    assert "already holds another disk (/dev/nvme9n1)" in failed.value.message
    assert not any(c.startswith("mkfs") for c in calls(host))


def test_a_disk_blkid_cannot_read_is_never_formatted(host):
    (host["state"] / "blkid-broken").write_text("")
    with pytest.raises(GpuboxError) as failed:
        mount(LocalRunner(), VOLUME_ID, "data")
    assert "blkid exited 4" in failed.value.message and "nothing was formatted" in failed.value.message
    assert not any(c.startswith("mkfs") for c in calls(host))


def test_the_script_parses_and_passes_shellcheck(tmp_path):
    path = tmp_path / "mount_volume.sh"
    path.write_text(mount_script())
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed")
    out = subprocess.run(["shellcheck", "-S", "warning", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout

