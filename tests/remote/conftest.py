"""Far hosts for the files, ports and agent tests: a real sshd whose sessions get a HOME
of the test's own (sshd's SetEnv), so what gpubox copies there lands under tmp."""

from __future__ import annotations

import pytest

from tests.remote.farbox import path_without
from tests.sshd import start_sshd


@pytest.fixture(scope="module")
def far(tmp_path_factory):
    """A far host: its own sshd, sessions with HOME = far/home."""
    root = tmp_path_factory.mktemp("far")
    (root / "home").mkdir()
    server = start_sshd(root / "sshd", session_env={"HOME": str(root / "home")})
    server.home = root / "home"
    yield server
    server.stop()


@pytest.fixture(scope="module")
def bare(tmp_path_factory):
    """A far host without rsync on its PATH."""
    root = tmp_path_factory.mktemp("bare")
    (root / "home").mkdir()
    server = start_sshd(root / "sshd", session_env={
        "HOME": str(root / "home"), "PATH": path_without(root, "rsync")})
    server.home = root / "home"
    yield server
    server.stop()
