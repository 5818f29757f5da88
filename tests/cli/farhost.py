"""A "far host" for end-to-end tests of the real `gpubox` command.

A real sshd on a loopback port whose sessions get a HOME of the test's own (sshd's
SetEnv), so the real bootstrap writes only there; a local site with the torch CPU wheel
and the book's zip; and the settings, as GPUBOX_* variables, that point the bootstrap
at that site. Used by the ssh and the AWS end-to-end tests.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.sshd import SshdServer, start_sshd
from tests.test_bootstrap import REAL_UV_CACHE, free_port, kill_host_servers, make_site, serve

URL_RE = re.compile(r"Jupyter: (http://127\.0\.0\.1:\d+/lab\?token=\w+)")


@dataclass
class FarHost:
    server: SshdServer
    home: Path
    env: dict[str, str] = field(default_factory=dict)

    def gpubox(self, *args: str) -> subprocess.CompletedProcess:
        """The real `gpubox` command, as a subprocess, with this host's settings."""
        return subprocess.run(
            [sys.executable, "-m", "gpubox", *args],
            env=self.env, capture_output=True, text=True, timeout=400, stdin=subprocess.DEVNULL,
        )  # fmt: skip


def site_env(base_url: str) -> dict[str, str]:
    """This process's environment plus the settings that point the bootstrap at the local
    site (`make_site` served at base_url) and a free Jupyter port."""
    return {
        **os.environ,
        "GPUBOX_NOTEBOOKS_URL": f"{base_url}/d2l-en.zip",
        "GPUBOX_TORCH_INDEX_URL": f"{base_url}/whl",
        "GPUBOX_PIP_FIND_LINKS": "/opt/wheels",
        "GPUBOX_FRAMEWORK_PACKAGES": "torch==2.13.0",
        "GPUBOX_JUPYTER_PORT": str(free_port()),
        "COLUMNS": "200",
    }


@contextlib.contextmanager
def far_host(tmp_path: Path, *, user_key: Path | None = None, box: str) -> Iterator[FarHost]:
    """Start it; at the end close `box`'s tunnel and kill what the bootstrap started."""
    home = tmp_path / "far-home"
    home.mkdir()
    server = start_sshd(
        tmp_path / "sshd", user_key=user_key,
        session_env={"HOME": str(home), "UV_CACHE_DIR": REAL_UV_CACHE, "UV_NATIVE_TLS": "1"},
    )  # fmt: skip
    (tmp_path / "site").mkdir()
    make_site(tmp_path / "site")
    with serve(tmp_path / "site") as base_url:
        host = FarHost(server, home, site_env(base_url))
        try:
            yield host
        finally:
            host.gpubox("jupyter", box, "--stop")
            kill_host_servers(home)
            server.stop()
