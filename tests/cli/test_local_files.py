"""gpubox's local files are a cache that never blocks: lost, damaged or read-only state,
an unwritable HOME and an unreadable keys folder, with the real `gpubox` command against
moto's server; and many commands at once on one HOME.

Read-only cases: as root, file modes do not stop writes, so the command then runs under
`setpriv --bounding-set=-all --inh-caps=-all` (still uid 0, but with no capabilities,
so the kernel applies the modes to it as to any user); as another user, plainly.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.cli.test_aws_subprocess import SSH_FROM, gpubox, live_instances
from tests.providers.aws.moto_seed import seed_images

UP = ("up", "box1", "--type", "g4dn.xlarge", "--no-setup", "--ssh-from", SSH_FROM)


@pytest.fixture
def endpoint(moto_server, isolation, monkeypatch):
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST"))
    seed_images("us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    return moto_server


def gpubox_bound(*args: str) -> subprocess.CompletedProcess:
    """`gpubox ARGS` bound by file modes even when this test runs as root (see above)."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv: file modes cannot be tried")
        prefix = ["setpriv", "--bounding-set=-all", "--inh-caps=-all"]
    return subprocess.run(
        [*prefix, sys.executable, "-m", "gpubox", *args], capture_output=True, text=True,
        stdin=subprocess.DEVNULL, env={**os.environ, "COLUMNS": "200"}, timeout=120,
    )  # fmt: skip


def clean(done: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr, done.stderr


@pytest.mark.slow  # several real `gpubox` runs against moto's server
def test_a_corrupt_state_database_is_moved_aside_and_every_command_still_works(
    endpoint, isolation
):
    assert gpubox(*UP).returncode == 0
    db = isolation / "data" / "state.sqlite"
    for tail in ("", "-wal", "-shm"):
        Path(f"{db}{tail}").unlink(missing_ok=True)
    db.write_bytes(os.urandom(3000))  # garbage where the database was
    status = gpubox("status", "--refresh")
    clean(status)
    assert status.returncode == 0, status.stderr
    assert "was damaged" in status.stderr
    assert [p.name for p in db.parent.glob("state.sqlite.corrupt-*")]
    # The key file says box1 is an AWS box: `down` finds it there and takes it down.
    down = gpubox("down", "box1", "--yes")
    clean(down)
    assert down.returncode == 0, down.stderr
    assert live_instances(endpoint) == []
    gc = gpubox("gc", "--json")
    clean(gc)
    assert gc.returncode == 0, gc.stderr
    up = gpubox(*UP)
    assert up.returncode == 0, up.stderr
    assert len(live_instances(endpoint)) == 1


@pytest.mark.slow
def test_a_deleted_state_database_does_not_hide_a_box_from_down(endpoint, isolation):
    assert gpubox(*UP).returncode == 0
    for path in (isolation / "data").glob("state.sqlite*"):
        path.unlink()
    down = gpubox("down", "box1", "--yes")
    clean(down)
    assert down.returncode == 0, down.stderr
    assert live_instances(endpoint) == []
    assert not (isolation / "data" / "keys" / "box1.pem").exists()


@pytest.mark.slow
def test_a_read_only_state_database_gives_way_to_a_cache_in_memory(endpoint, isolation):
    assert gpubox(*UP).returncode == 0
    data = isolation / "data"
    assert gpubox("status").returncode == 0  # checkpointed: the file holds everything
    db = data / "state.sqlite"
    for path in data.glob("state.sqlite*"):
        path.chmod(0o444)
    data.chmod(0o555)  # no new -wal/-shm beside it either
    try:
        for args in (("status",), ("status", "--refresh"), UP, ("gc", "--json")):
            done = gpubox_bound(*args)
            clean(done)
            assert done.returncode == 0, (args, done.stderr)
            assert done.stderr.count("the local cache is read-only") == 1, done.stderr
        listed = gpubox_bound("status", "--json")
        assert [b["name"] for b in json.loads(listed.stdout)] == ["box1"]  # read from the file
        assert len(live_instances(endpoint)) == 1
        # down: the box goes; the ssh config in the read-only folder cannot be changed
        down = gpubox_bound("down", "box1", "--yes")
        clean(down)
        assert down.returncode == 1
        assert "error: 'box1' is terminated, but cannot write" in down.stderr
        assert "`gpubox down box1` removes what is left here" in down.stderr
        assert live_instances(endpoint) == []
    finally:
        data.chmod(0o700)
        for path in data.glob("state.sqlite*"):
            path.chmod(0o600)
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    finish = gpubox("down", "box1", "--yes")
    assert finish.returncode == 0, finish.stderr
    assert "ssh config entry" in finish.stderr
    assert "box1" not in (data / "ssh_config").read_text()


@pytest.mark.slow
def test_an_unwritable_home_and_an_unreadable_keys_folder_are_said_plainly(endpoint, tmp_path,
                                                                          monkeypatch):
    home = tmp_path / "locked-home"
    home.mkdir(mode=0o555)
    home.chmod(0o555)
    monkeypatch.setenv("GPUBOX_HOME", str(home))
    status = gpubox_bound("status")
    clean(status)
    assert status.returncode == 0, status.stderr
    assert "read-only" in status.stderr
    up = gpubox_bound(*UP)
    clean(up)
    assert up.returncode != 0
    assert f"cannot make the folder {home}" in up.stderr and "GPUBOX_HOME" in up.stderr
    assert live_instances(endpoint) == []  # nothing made that could not be used
    from tests.cli.test_aws_subprocess import ec2_client

    assert ec2_client(endpoint).describe_key_pairs()["KeyPairs"] == []

    home.chmod(0o700)
    assert gpubox(*UP).returncode == 0
    keys = home / "data" / "keys"
    keys.chmod(0)
    try:
        again = gpubox_bound(*UP)  # finds the box; its ssh config entry cannot be made
        clean(again)
        assert again.returncode == 0, again.stderr
        down = gpubox_bound("down", "box1", "--yes")
        clean(down)
        assert down.returncode != 0
        assert f"cannot remove {keys / 'box1.pem'}" in down.stderr
    finally:
        keys.chmod(0o700)
    finish = gpubox("down", "box1", "--yes")  # the re-run removes what is left
    assert finish.returncode == 0, finish.stderr
    assert "removed what was left of 'box1'" in finish.stderr
    assert not (keys / "box1.pem").exists()


@pytest.mark.slow
def test_eight_mixed_commands_at_once_on_an_empty_home_all_succeed(endpoint, isolation):
    commands = [
        ("status",), ("status", "--json"), ("ls",), ("cost",), ("gc", "--json"),
        ("images",), ("config", "set", "framework", "jax"),
        ("config", "set", "idle_stop_minutes", "30"),
    ]  # fmt: skip
    with ThreadPoolExecutor(len(commands)) as pool:
        done = list(pool.map(lambda args: gpubox(*args), commands))
    for args, result in zip(commands, done, strict=True):
        clean(result)
        assert result.returncode == 0, (args, result.stderr)
    config = (isolation / "config" / "config.toml").read_text()
    assert 'framework = "jax"' in config and 'idle_stop_minutes = "30"' in config


def _churn(home: str, name: str, rounds: int) -> None:
    """One process: add and remove its own box's entries, as `up`/`down` do."""
    os.environ["GPUBOX_HOME"] = home
    from gpubox import config
    from gpubox.providers.base import SshEndpoint
    from gpubox.providers.ssh import HostRegistry
    from gpubox.remote.hostkeys import forget_host_key, pin_host_keys
    from gpubox.remote.ssh_config import update_ssh_config

    settings = config.load()
    registry = HostRegistry(settings.data_dir / "hosts.json")
    endpoint = SshEndpoint(host="127.0.0.1", user="u", port=2200)
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
    for i in range(rounds):
        update_ssh_config(settings, name, endpoint)
        registry.put(name, {"user": "u", "host": "127.0.0.1", "port": 2200})
        pin_host_keys(settings, name, [key])
        if i < rounds - 1:  # the last round leaves the box in place
            update_ssh_config(settings, name, None)
            registry.remove(name)
            forget_host_key(settings, name)


def test_parallel_up_and_down_of_different_boxes_keep_exactly_the_live_ones(isolation):
    # Real processes, each doing what `up`/`down` of its own box do to the shared files
    # (ssh config, hosts.json, known_hosts): the same code paths, without the network.
    names = [f"b{i}" for i in range(8)]
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_churn, args=(str(isolation), n, 15)) for n in names]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
        assert proc.exitcode == 0
    data = isolation / "data"
    config = (data / "ssh_config").read_text()
    assert sorted(line.split()[1] for line in config.splitlines() if line.startswith("Host ")) \
        == names  # fmt: skip
    assert sorted(json.loads((data / "hosts.json").read_text())) == names
    assert len((data / "known_hosts").read_text().splitlines()) == len(names)
    assert not list(data.glob("*.tmp")) and not list(data.glob(".*.tmp"))


def test_folders_and_files_are_private_whatever_the_umask(isolation):
    from gpubox import config
    from gpubox.providers.base import SshEndpoint
    from gpubox.remote.ssh_config import update_ssh_config
    from gpubox.state import State

    old = os.umask(0)
    try:
        settings = config.load()
        State(settings.state_path).close()
        update_ssh_config(settings, "b1", SshEndpoint(host="127.0.0.1", user="u"))
        config.write_setting(settings, "framework", "jax")
    finally:
        os.umask(old)
    for folder in (isolation, settings.data_dir, settings.config_dir):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    for path in (settings.ssh_config_path, settings.config_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def _under_umask(mask: int, *argv: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        list(argv), capture_output=True, text=True, stdin=subprocess.DEVNULL, env=env,
        timeout=120, preexec_fn=lambda: os.umask(mask),
    )  # fmt: skip


# Holds the state database open (so its -wal and -shm files exist) and says their modes.
OPEN_STATE = """
import os, stat
from gpubox import config
from gpubox.state import State
state = State(config.load().state_path)
state.put("probe", "1")
for tail in ("", "-wal", "-shm"):
    path = str(state.path) + tail
    print(tail or "db", oct(stat.S_IMODE(os.stat(path).st_mode)))
state.close()
"""


@pytest.mark.parametrize("mask", [0o000, 0o022], ids=["umask000", "umask022"])
def test_every_folder_is_0700_and_every_file_0600_after_real_commands(
    endpoint, isolation, tmp_path, mask
):
    """The real commands, run under the umask: an AWS box (its key), a local box, a
    command run on it (its log), status, a setting; then every folder under GPUBOX_HOME
    is 0700 and every file 0600, the state database and its -wal/-shm included."""
    env = {**os.environ, "HOME": str(tmp_path / "home"), "COLUMNS": "200"}
    (tmp_path / "home").mkdir()
    commands = [UP, ("up", "here", "--provider", "local", "--no-setup"),
                ("run", "here", "--", "echo", "hi"), ("status", "--refresh"),
                ("config", "set", "framework", "jax")]  # fmt: skip
    for args in commands:
        done = _under_umask(mask, sys.executable, "-m", "gpubox", *args, env=env)
        assert done.returncode == 0, (args, done.stderr)
    opened = _under_umask(mask, sys.executable, "-c", OPEN_STATE, env=env)
    assert opened.returncode == 0, opened.stderr
    assert opened.stdout.split() == ["db", "0o600", "-wal", "0o600", "-shm", "0o600"]

    wrong = []
    for folder, dirs, files in os.walk(isolation):
        for name in dirs:
            if stat.S_IMODE((Path(folder) / name).stat().st_mode) != 0o700:
                wrong.append(f"{oct((Path(folder) / name).stat().st_mode)} {folder}/{name}/")
        for name in files:
            if stat.S_IMODE((Path(folder) / name).stat().st_mode) != 0o600:
                wrong.append(f"{oct((Path(folder) / name).stat().st_mode)} {folder}/{name}")
    made = {p.name for p in isolation.rglob("*")}
    assert {"state.sqlite", "locks", "keys", "box1.pem", "node-0.log", "config.toml"} <= made
    assert wrong == []
    assert stat.S_IMODE(isolation.stat().st_mode) == 0o700


@pytest.mark.sshd
@pytest.mark.slow  # a dozen real `gpubox` runs, each with an ssh connection
def test_parallel_up_and_down_of_ssh_boxes_leave_exactly_the_live_ones_in_the_ssh_config(
    sshd, isolation
):
    def up(name: str) -> subprocess.CompletedProcess:
        return gpubox("up", name, "--host", sshd.target, "--key", str(sshd.key_path),
                      "--no-setup")  # fmt: skip

    first = [f"h{i}" for i in range(4)]
    with ThreadPoolExecutor(8) as pool:
        for done in pool.map(up, first):
            assert done.returncode == 0, done.stderr
        then = [pool.submit(gpubox, "down", n) for n in first[:2]]
        then += [pool.submit(up, n) for n in ("h4", "h5")]
        for future in then:
            done = future.result()
            assert done.returncode == 0, done.stderr
    live = ["h2", "h3", "h4", "h5"]
    data = isolation / "data"
    config = (data / "ssh_config").read_text()
    assert sorted(line.split()[1] for line in config.splitlines() if line.startswith("Host ")) \
        == live  # fmt: skip
    assert sorted(json.loads((data / "hosts.json").read_text())) == live
    pinned = {line.split()[0] for line in (data / "known_hosts").read_text().splitlines()}
    assert pinned == {f"gpubox-{n}" for n in live}


def test_an_unreadable_config_file_is_one_error_naming_it(isolation):
    path = isolation / "config" / "config.toml"
    path.parent.mkdir(parents=True)
    path.write_text('framework = "jax"\n')
    path.chmod(0)
    try:
        done = gpubox_bound("status")
    finally:
        path.chmod(0o600)
    clean(done)
    assert done.returncode == 1
    assert done.stderr.startswith(f"error: cannot read {path}: Permission denied")
    assert "chmod u+r" in done.stderr


def test_an_unreadable_tokens_folder_is_one_error_naming_it(isolation):
    from tests.cli.test_aws_subprocess import gpubox as plain

    assert plain("up", "b1", "--provider", "local", "--no-setup").returncode == 0
    tokens = isolation / "data" / "tokens"
    tokens.mkdir(exist_ok=True)
    (tokens / "b1").write_text("0123abcd\n")
    tokens.chmod(0)
    try:
        jupyter = gpubox_bound("jupyter", "b1", "--no-browser")
        down = gpubox_bound("down", "b1", "--yes")
    finally:
        tokens.chmod(0o700)
    assert jupyter.stderr.startswith(f"error: cannot read {tokens / 'b1'}")
    for done in (jupyter, down):  # before: "internal error: PermissionError" from jupyter
        clean(done)
        assert done.returncode == 1, done.stderr
        assert f"{tokens / 'b1'}: Permission denied" in done.stderr, done.stderr
        assert f"make {tokens} yours" in done.stderr and "chmod u+rwx" in done.stderr
