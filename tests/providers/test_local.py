"""The local provider: this machine, reached with a LocalRunner, never stopped by gpubox."""

from __future__ import annotations

import pytest

from gpubox.errors import NotSupported
from gpubox.providers.base import BoxSpec, BoxState, Provider
from gpubox.providers.local import LocalProvider
from gpubox.remote.runner import LocalRunner
from gpubox.remote.ssh import runner_for


def test_launch_find_list_and_endpoint(settings):
    provider = LocalProvider(settings)
    assert isinstance(provider, Provider)
    assert provider.find("here") is None
    box = provider.launch(BoxSpec(name="here", provider="local"))
    assert box.state is BoxState.RUNNING
    assert provider.launch(BoxSpec(name="here", provider="local")) == box
    assert [b.name for b in LocalProvider(settings).list()] == ["here"]
    endpoint = provider.endpoint(box)
    assert endpoint.local
    runner = runner_for(endpoint, settings, "here")
    assert isinstance(runner, LocalRunner)
    assert runner.run("echo $((6 * 7))").stdout == "42\n"


def test_stop_start_not_supported_and_terminate_forgets(settings):
    from gpubox.jupyter import token_for, token_path

    provider = LocalProvider(settings)
    box = provider.launch(BoxSpec(name="here", provider="local"))
    with pytest.raises(NotSupported, match="does not stop this machine"):
        provider.stop(box)
    with pytest.raises(NotSupported):
        provider.start(box)
    token_for(settings, "here")
    provider.terminate(box)
    assert provider.find("here") is None and provider.list() == []
    assert not token_path(settings, "here").exists()
