"""Clients, the AWS-error mapping, and the regions gpubox remembers."""

from __future__ import annotations

import pytest

from gpubox.errors import (
    CapacityError,
    CredentialsError,
    GpuboxError,
    InvalidInput,
    NotFound,
    QuotaExceeded,
)
from gpubox.providers.aws import session


def client_error(code: str, status: int = 400):
    from botocore.exceptions import ClientError

    return ClientError(
        {"Error": {"Code": code, "Message": f"message for {code}"},
         "ResponseMetadata": {"HTTPStatusCode": status}},
        "RunInstances",
    )


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("InsufficientInstanceCapacity", CapacityError),
        ("VcpuLimitExceeded", QuotaExceeded),
        ("MaxSpotInstanceCountExceeded", QuotaExceeded),
        ("InstanceLimitExceeded", QuotaExceeded),
        ("AuthFailure", CredentialsError),
        ("UnauthorizedOperation", CredentialsError),
        ("InvalidInstanceID.NotFound", NotFound),
        ("InvalidParameterValue", InvalidInput),
        ("SomethingElse", GpuboxError),
    ],
)
def test_client_errors_map_to_gpubox_errors_keeping_the_code(code, kind):
    mapped = session.map_error(client_error(code), "launching")
    assert type(mapped) is kind
    assert mapped.message == f"launching: message for {code} (AWS {code})"


def test_botocore_credential_and_network_errors_map():
    from botocore.exceptions import EndpointConnectionError, NoCredentialsError

    mapped = session.map_error(NoCredentialsError())
    assert isinstance(mapped, CredentialsError) and "aws configure" in mapped.hint
    offline = session.map_error(EndpointConnectionError(endpoint_url="https://127.0.0.1:9"))
    assert type(offline) is GpuboxError and "cannot reach AWS" in offline.message
    assert session.map_error(ValueError("not botocore")) is None


def test_clients_are_cached_and_the_launch_client_never_retries(settings):
    ec2 = session.client(settings, "ec2", "us-west-2")
    assert session.client(settings, "ec2", "us-west-2") is ec2
    assert session.client(settings, "ec2", "eu-west-1") is not ec2
    launch = session.client(settings, "ec2", "us-west-2", purpose="launch")
    assert launch is not ec2
    assert launch.meta.config.retries["total_max_attempts"] == 1
    assert ec2.meta.config.retries == {"mode": "standard", "total_max_attempts": 5}
    # Quotas and prices are advice: a missing or failing service must not stall a command.
    quotas = session.client(settings, "service-quotas", "us-west-2")
    assert quotas.meta.config.retries["total_max_attempts"] == 2


def test_aws_endpoint_url_is_honoured(isolation, monkeypatch):
    from gpubox import config

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:5999")
    ec2 = session.client(config.load(), "ec2", "us-east-1")
    assert ec2.meta.endpoint_url == "http://127.0.0.1:5999"


def test_region_order_setting_then_boto3_then_us_east_1(isolation, monkeypatch):
    from dataclasses import replace

    from gpubox import config

    monkeypatch.delenv("AWS_DEFAULT_REGION")
    plain = config.load()
    assert session.default_region(plain) == "us-east-1"
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    assert session.default_region(replace(plain, profile=None, ssh_user_aws="x")) == "eu-west-1"
    assert session.default_region(replace(plain, region="ap-south-1")) == "ap-south-1"


def test_caller_identity_and_regions_remembered(aws, settings):
    from gpubox.state import State

    assert session.caller_identity(settings)["Account"] == "123456789012"
    state = State(settings.state_path)
    assert session.used_regions(state) == []
    session.remember_region(state, "us-west-2")
    session.remember_region(state, "eu-west-1")
    session.remember_region(state, "us-west-2")
    assert session.used_regions(state) == ["eu-west-1", "us-west-2"]
    state.close()


def test_status_offline_asks_aws_twice_at_most_and_still_lists_other_boxes(isolation, tmp_path):
    """AWS that does not answer (a listener on loopback that hangs up at once, counting
    the connections): `status` tries each listing at most twice, shows the local box, and
    says that AWS could not be asked, instead of failing after five tries per call."""
    import os
    import socket
    import subprocess
    import sys
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[int] = []

    def hang_up() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(1)
            conn.close()

    threading.Thread(target=hang_up, daemon=True).start()
    env = dict(os.environ, AWS_ENDPOINT_URL=f"http://127.0.0.1:{listener.getsockname()[1]}")

    def gpubox(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "gpubox", *args], env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip

    assert gpubox("up", "here", "--provider", "local", "--no-setup").returncode == 0
    accepted.clear()
    done = gpubox("status", "--refresh")
    listener.close()
    assert done.returncode == 0, done.stderr
    assert "here" in done.stdout and "AWS boxes could not be listed" in done.stderr
    # The region list (one call) is all it gets to: two tries, not five.
    assert 1 <= len(accepted) <= 2, accepted


def test_has_credentials_sees_files_and_named_profiles_and_needs_no_boto3_without(
    isolation, tmp_path, monkeypatch
):
    """No AWS variable and no AWS file: AWS is not asked (and boto3 not imported for it);
    a credentials file or a profile name, even a misspelt one, means AWS must be asked."""
    from gpubox import config

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_SECURITY_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "creds"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    session.aws_session.cache_clear()
    assert session.has_credentials(config.load()) is False

    (tmp_path / "creds").write_text("[default]\naws_access_key_id = AKIAX\naws_secret_access_key = s\n")
    session.aws_session.cache_clear()
    assert session.has_credentials(config.load()) is True
    (tmp_path / "creds").unlink()

    monkeypatch.setenv("AWS_PROFILE", "nope")
    session.aws_session.cache_clear()
    assert session.has_credentials(config.load()) is True
    session.aws_session.cache_clear()
