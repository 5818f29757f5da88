"""Test isolation for every test: gpubox's files under tmp_path, no real AWS reachable.

Nothing here may let a test reach anything but 127.0.0.0/8: fake credentials, the
instance-metadata address disabled, no AWS config or credentials files.
"""

from __future__ import annotations

import os

import pytest

pytest_plugins = ["tests.sshd", "tests.aws_calls"]

# The idle agent counts the CPU use of the box's login user, root's included on a host
# without systemd such as this one, where other tests (and other runs of the suite)
# burn the CPU as root too. So every agent the suite runs takes this uid, which no
# account has, for its login user: a test's burner runs as it (setpriv), and nothing
# else on the machine does (one per process: two runs at once do not share it). The
# tests of the rule itself (tests/agent/test_work_whose.py) drop it. sshd sessions get
# it through start_sshd's SetEnv.
SUITE_LOGIN_UID = 40000 + os.getpid() % 20000
os.environ["GPUBOX_IDLE_LOGIN_UID"] = str(SUITE_LOGIN_UID)

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
}


def pytest_addoption(parser):
    parser.addoption(
        "--integration",
        action="store_true",
        default=False,
        help="run tests that talk to real AWS (never in CI)",
    )


# Tests that must not overlap one another when pytest-xdist runs the suite in several
# workers (`-n 2 --dist loadgroup` in pyproject.toml): one group runs in one worker, in
# turn. "machine": the idle agent reads this machine's whole process table (a CPU burner
# under a person's uid in one test would be work in another), and the two-host tests
# make network namespaces with fixed addresses and a route in this namespace. Tests
# elsewhere that read a real agent's verdict carry @pytest.mark.machine_wide.
MACHINE_WIDE = (
    "tests/agent/",
    "tests/test_idle_client.py",
    "tests/cluster/test_idle_nodes.py",
)


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(config, items):
    for item in items:
        where = item.nodeid.replace("\\", "/")
        if (where.startswith(MACHINE_WIDE) or "machine_wide" in item.keywords
                or "netns_pair" in getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.xdist_group("machine"))
    if config.getoption("--integration"):
        return
    skip = pytest.mark.skip(reason="talks to real AWS; pass --integration")
    for item in items:
        if "integration" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def isolation(tmp_path, monkeypatch):
    """GPUBOX_HOME under tmp_path (every file gpubox keeps); fake AWS credentials; no
    real address-detection or latency target. Tests that run a "host" set its HOME."""
    home = tmp_path / "gpubox-home"
    monkeypatch.setenv("GPUBOX_HOME", str(home))
    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_REGION", raising=False)
    # Never reach real AWS: with no moto, every AWS call goes to a closed loopback port.
    # Tests with moto set their own (the server's URL), or drop it for in-process mock_aws.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    # Never ask a real address-detection service.
    monkeypatch.setenv("GPUBOX_PUBLIC_IP_URL", "http://127.0.0.1:9/unreachable")
    # Never time a real AWS endpoint: region latency is measured against loopback only.
    monkeypatch.setenv("GPUBOX_LATENCY_ENDPOINT", "tcp://127.0.0.1:9")
    # The idle agent's install puts `gpubox-keep` here, not in this machine's /usr/local/bin.
    monkeypatch.setenv("GPUBOX_KEEP_BIN_DIR", str(tmp_path / "keep-bin"))
    # Boxes are searched for in us-east-1 (and where a test made one): moto answers a
    # scan of all its 26 enabled regions in ~15 s on 2 cores. Tests of the scan unset it.
    monkeypatch.setenv("GPUBOX_AWS_REGIONS", "us-east-1")
    # Jupyter servers and kernels a test starts write their runtime files and IPython's
    # history here, not under this account's HOME (uv's package cache is shared on purpose).
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "jupyter-runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    # jupyter_lsp (in every Jupyter server here) runs `npm prefix -g`, which logs under npm's cache.
    monkeypatch.setenv("npm_config_cache", str(tmp_path / "npm"))
    keep = ("GPUBOX_HOME", "GPUBOX_PUBLIC_IP_URL", "GPUBOX_LATENCY_ENDPOINT", "GPUBOX_KEEP_BIN_DIR",
            "GPUBOX_AWS_REGIONS", "GPUBOX_IDLE_LOGIN_UID")
    for name in list(__import__("os").environ):
        if name.startswith("GPUBOX_") and name not in keep:
            monkeypatch.delenv(name, raising=False)
    yield home


@pytest.fixture
def settings(isolation):
    from gpubox import config

    return config.load()
