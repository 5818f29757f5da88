"""SshRunner against a real sshd on 127.0.0.1, with the real OpenSSH client."""

from __future__ import annotations

import os
import stat

import pytest

from gpubox.errors import AuthenticationFailed, HostUnreachable, InvalidInput, RemoteCommandFailed
from gpubox.remote import hostkeys
from gpubox.remote.ssh import SshRunner, close_master, ssh_argv, wait_until_reachable
from tests.sshd import free_port, keygen

pytestmark = pytest.mark.sshd


@pytest.fixture
def runner(sshd, settings):
    r = SshRunner(sshd.endpoint(), settings, "box1")
    yield r
    r.close()


def test_run_returns_output_and_exit_code(runner):
    result = runner.run("echo hello; echo oops >&2; exit 0")
    assert result.ok and result.stdout == "hello\n" and "oops" in result.stderr
    assert runner.run("exit 7", check=False).exit_code == 7


def test_failed_command_raises_with_command_code_and_tail(runner):
    with pytest.raises(RemoteCommandFailed) as info:
        runner.run("echo last words; exit 3")
    assert info.value.returncode == 3
    assert "last words" in info.value.message and "exit 3" in info.value.message


def test_run_passes_input_env_and_bash_syntax(runner):
    result = runner.run('read -r line; echo "$line/$GREETING"; [[ 1 == 1 ]] && echo bash',
                        input="from-stdin\n", env={"GREETING": "it's me"})
    assert result.stdout.splitlines() == ["from-stdin/it's me", "bash"]


def test_stream_gives_each_line_as_it_comes(runner):
    lines: list[str] = []
    code = runner.stream("for i in 1 2 3; do echo line$i; done; echo err >&2; exit 4", lines.append)
    assert code == 4
    assert lines == ["line1", "line2", "line3", "err"]


def test_stream_timeout_is_an_error(runner):
    lines: list[str] = []
    try:
        with pytest.raises(RemoteCommandFailed) as info:
            runner.stream("echo $$; exec sleep 30", lines.append, timeout=1)
        assert info.value.hint == "it did not finish within 1s"
    finally:
        # the far side is this machine: end the remote sleep by its PID
        if lines:
            os.kill(int(lines[0]), 9)


def test_put_copies_bytes_and_mode(runner, tmp_path):
    local = tmp_path / "payload.bin"
    local.write_bytes(bytes(range(256)) * 10)
    remote = tmp_path / "far side" / "sub" / "copy.bin"
    runner.put(local, str(remote), mode=0o640)
    assert remote.read_bytes() == local.read_bytes()
    assert stat.S_IMODE(remote.stat().st_mode) == 0o640


def test_put_expands_tilde_on_the_host(sshd_factory, settings, tmp_path):
    # The far side's HOME is the session's (sshd's SetEnv), under tmp_path: never the
    # HOME of whoever runs the tests, nor the account's own home folder.
    far_home = tmp_path / "far-home"
    far_home.mkdir()
    server = sshd_factory(session_env={"HOME": str(far_home)})
    local = tmp_path / "f.txt"
    local.write_text("x")
    runner = SshRunner(server.endpoint(), settings, "tilde1")
    try:
        runner.put(local, "~/sub dir/f.txt")
        assert runner.run("echo ~").stdout.strip() == str(far_home)
    finally:
        runner.close()
    assert (far_home / "sub dir" / "f.txt").read_text() == "x"


def test_first_connection_pins_host_key_and_says_its_fingerprint(sshd, settings):
    messages: list[str] = []
    r = SshRunner(sshd.endpoint(), settings, "fresh", on_message=messages.append)
    try:
        r.run("true")
    finally:
        r.close()
    expected = hostkeys.fingerprint(sshd.host_key_line)
    assert hostkeys.pinned_keys(settings, "fresh") == [sshd.host_key_line]
    assert any(expected in m for m in messages)
    assert stat.S_IMODE(settings.known_hosts_path.stat().st_mode) == 0o600


def test_host_keys_given_by_provider_are_pinned_without_scanning(sshd, settings):
    endpoint = sshd.endpoint(host_keys=(sshd.host_key_line + " root@console",))
    pin = hostkeys.ensure_host_key(endpoint, settings, "given")
    assert pin.source == "given" and pin.keys == (sshd.host_key_line,)


def test_wrong_provider_given_key_refuses_connection(sshd, settings, tmp_path):
    other = keygen(tmp_path / "other_host", "x")
    line = " ".join(open(f"{other}.pub").read().split()[:2])
    r = SshRunner(sshd.endpoint(host_keys=(line,)), settings, "mitm")
    with pytest.raises(AuthenticationFailed, match="not the one gpubox pinned") as info:
        r.run("true")
    assert "--forget-host-key" in info.value.hint


def test_unreachable_port_names_host_and_port(settings, sshd):
    port = free_port()
    r = SshRunner(sshd.endpoint(port=port), settings, "nobody")
    with pytest.raises(HostUnreachable, match=f"127.0.0.1:{port}"):
        r.run("true")
    assert hostkeys.pinned_keys(settings, "nobody") == []


def test_wrong_key_is_authentication_failed_naming_the_key(sshd, settings, tmp_path):
    wrong = keygen(tmp_path / "wrong_key", "wrong")
    r = SshRunner(sshd.endpoint(key_path=wrong), settings, "box1")
    with pytest.raises(AuthenticationFailed, match="refused the key") as info:
        r.run("true")
    assert str(wrong) in info.value.message and "--key" in info.value.hint


def test_missing_key_file_is_invalid_input(sshd, settings, tmp_path):
    with pytest.raises(InvalidInput, match="does not exist"):
        SshRunner(sshd.endpoint(key_path=tmp_path / "nope"), settings, "box1")


def test_loose_key_permissions_are_named(sshd, settings, tmp_path):
    loose = tmp_path / "loose"
    loose.write_bytes(sshd.key_path.read_bytes())
    loose.chmod(0o644)
    r = SshRunner(sshd.endpoint(key_path=loose), settings, "box1")
    with pytest.raises(AuthenticationFailed, match="others can read it") as info:
        r.run("true")
    assert info.value.hint == f"chmod 600 {loose}"


def test_changed_host_key_is_refused_until_forgotten(sshd_factory, settings):
    first = sshd_factory()
    endpoint = first.endpoint()
    r = SshRunner(endpoint, settings, "rebuilt")
    r.run("true")
    close_master(endpoint, settings, "rebuilt")
    first.stop()
    second = sshd_factory(port=first.port, user_key=first.key_path)
    assert second.host_key_line != first.host_key_line
    with pytest.raises(AuthenticationFailed, match="not the one gpubox pinned") as info:
        SshRunner(endpoint, settings, "rebuilt").run("true")
    assert str(settings.known_hosts_path) in info.value.hint
    assert "gpubox ssh rebuilt --forget-host-key" in info.value.hint
    # still strict: the pin was not silently replaced
    assert hostkeys.pinned_keys(settings, "rebuilt") == [first.host_key_line]
    assert hostkeys.forget_host_key(settings, "rebuilt") == [first.host_key_line]
    again = SshRunner(endpoint, settings, "rebuilt")
    assert again.run("echo ok").stdout == "ok\n"
    again.close()
    assert hostkeys.pinned_keys(settings, "rebuilt") == [second.host_key_line]


def test_wait_until_reachable_waits_for_a_late_sshd(sshd_factory, settings, tmp_path):
    import getpass
    import threading

    from gpubox.providers.base import SshEndpoint

    port = free_port()
    user_key = keygen(tmp_path / "late_key", "late")
    started = []
    timer = threading.Timer(1.0, lambda: started.append(sshd_factory(port=port, user_key=user_key)))
    endpoint = SshEndpoint(host="127.0.0.1", user=getpass.getuser(), port=port, key_path=user_key)
    progress: list[str] = []
    timer.start()
    try:
        wait_until_reachable(endpoint, settings, "late", timeout=30, on_progress=progress.append,
                             interval=0.3)
    finally:
        timer.join()
        close_master(endpoint, settings, "late")
    assert started, "the server was started by the timer"
    assert any("does not answer yet" in p for p in progress)
    assert any("trusted its host key" in p for p in progress)


def test_wait_until_reachable_gives_up_with_host_and_port(settings, sshd):
    port = free_port()
    clock = iter(range(0, 1000, 5))
    with pytest.raises(HostUnreachable, match=f"127.0.0.1:{port} did not answer SSH within 12s"):
        wait_until_reachable(sshd.endpoint(port=port), settings, "x", timeout=12,
                             clock=lambda: next(clock), sleep=lambda s: None)


def test_wait_until_reachable_stops_at_once_on_auth_error(sshd, settings, tmp_path):
    wrong = keygen(tmp_path / "wrong_key", "wrong")
    slept: list[float] = []
    with pytest.raises(AuthenticationFailed):
        wait_until_reachable(sshd.endpoint(key_path=wrong), settings, "box1", timeout=60,
                             sleep=slept.append)
    assert slept == []


def test_ssh_argv_is_strict_and_runs_a_command(sshd, settings):
    import subprocess

    argv = ssh_argv(sshd.endpoint(), settings, "box1", command="echo via-argv", tty=False)
    assert "StrictHostKeyChecking=yes" in argv and "HostKeyAlias=gpubox-box1" in argv
    hostkeys.ensure_host_key(sshd.endpoint(), settings, "box1")
    out = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=30)
    close_master(sshd.endpoint(), settings, "box1")
    assert out.stdout == "via-argv\n"
