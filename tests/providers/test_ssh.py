"""The ssh provider against a real sshd: register only what answers, forget cleanly."""

from __future__ import annotations

import json

import pytest

from gpubox.errors import AuthenticationFailed, HostUnreachable, InvalidInput, NotSupported
from gpubox.providers.base import BoxSpec, BoxState, Provider
from gpubox.providers.ssh import SshProvider, parse_host
from gpubox.remote import hostkeys
from gpubox.remote.ssh import close_master, runner_for
from tests.sshd import free_port, keygen


def spec(sshd, name="h1", **changes) -> BoxSpec:
    values = dict(name=name, provider="ssh", host=f"{sshd.user}@127.0.0.1:{sshd.port}",
                  key_path=sshd.key_path)
    values.update(changes)
    return BoxSpec(**values)


def registry(settings) -> dict:
    path = settings.data_dir / "hosts.json"
    return json.loads(path.read_text()) if path.exists() else {}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ubuntu@example.org", ("ubuntu", "example.org", 22)),
        ("ubuntu@10.0.0.5:2222", ("ubuntu", "10.0.0.5", 2222)),
        ("root@[::1]:2200", ("root", "::1", 2200)),
        ("me@::1", ("me", "::1", 22)),
    ],
)
def test_parse_host(text, expected):
    assert parse_host(text) == expected


@pytest.mark.parametrize("text", ["u@", "u@host:port", "u@-oProxyCommand=x", "u@host:70000"])
def test_parse_host_rejects_what_cannot_be_a_host(text):
    with pytest.raises(InvalidInput):
        parse_host(text)


@pytest.mark.sshd
def test_launch_registers_a_reachable_host_and_runs_commands(sshd, settings):
    provider = SshProvider(settings)
    assert isinstance(provider, Provider)
    box = provider.launch(spec(sshd))
    assert box.state is BoxState.RUNNING and box.id == f"{sshd.user}@127.0.0.1:{sshd.port}"
    assert provider.launch(spec(sshd)) == box  # idempotent per name
    assert [b.name for b in provider.list()] == ["h1"]
    endpoint = provider.endpoint(box)
    runner = runner_for(endpoint, settings, "h1")
    assert runner.run("echo far").stdout == "far\n"
    close_master(endpoint, settings, "h1")
    assert hostkeys.pinned_keys(settings, "h1") == [sshd.host_key_line]
    assert provider.probe(box).state is BoxState.RUNNING


@pytest.mark.sshd
def test_same_name_for_another_host_is_refused(sshd, settings):
    provider = SshProvider(settings)
    provider.launch(spec(sshd))
    with pytest.raises(InvalidInput, match="already the host"):
        provider.launch(spec(sshd, host=f"other@127.0.0.1:{sshd.port}"))


@pytest.mark.sshd
def test_unreachable_port_registers_nothing(sshd, settings):
    port = free_port()
    with pytest.raises(HostUnreachable, match=f"127.0.0.1:{port}"):
        SshProvider(settings).launch(spec(sshd, host=f"{sshd.user}@127.0.0.1:{port}"))
    assert registry(settings) == {}
    assert hostkeys.pinned_keys(settings, "h1") == []


@pytest.mark.sshd
def test_wrong_key_registers_nothing_and_unpins(sshd, settings, tmp_path):
    wrong = keygen(tmp_path / "wrong", "wrong")
    with pytest.raises(AuthenticationFailed, match=str(wrong)):
        SshProvider(settings).launch(spec(sshd, key_path=wrong))
    assert registry(settings) == {}
    assert hostkeys.pinned_keys(settings, "h1") == []


@pytest.mark.sshd
def test_stop_and_start_say_why_not(sshd, settings):
    provider = SshProvider(settings)
    box = provider.launch(spec(sshd))
    with pytest.raises(NotSupported, match="cannot stop a host it does not own") as info:
        provider.stop(box)
    assert "gpubox down h1" in info.value.hint
    with pytest.raises(NotSupported):
        provider.start(box)


@pytest.mark.sshd
def test_terminate_forgets_host_pin_and_token_but_touches_nothing_there(sshd, settings, tmp_path):
    from gpubox.jupyter import token_for, token_path

    marker = tmp_path / "data-on-the-host.txt"
    marker.write_text("keep me")
    provider = SshProvider(settings)
    box = provider.launch(spec(sshd))
    token_for(settings, "h1")
    provider.terminate(box)
    assert provider.find("h1") is None and registry(settings) == {}
    assert hostkeys.pinned_keys(settings, "h1") == []
    assert not token_path(settings, "h1").exists()
    assert marker.read_text() == "keep me"


@pytest.mark.sshd
def test_probe_marks_a_host_that_went_away(sshd_factory, settings):
    server = sshd_factory()
    provider = SshProvider(settings)
    box = provider.launch(spec(server))
    server.stop()
    probed = provider.probe(box)
    assert probed.state is BoxState.UNKNOWN and "cannot reach" in probed.get("last_error")
    assert provider.find("h1").state is BoxState.UNKNOWN  # list/find need no network


def test_launch_without_host_says_what_to_pass(settings):
    with pytest.raises(InvalidInput, match="needs the host") as info:
        SshProvider(settings).launch(BoxSpec(name="h1", provider="ssh"))
    assert "--host" in info.value.hint
