"""boto3 sessions and clients, and the one place AWS errors become gpubox errors.

Clients are cached per (service, region) for each Settings, with botocore's
"standard" retry mode and a bound on attempts. boto3 honours AWS_ENDPOINT_URL by
itself, which is how the tests point the `gpubox` command at a local moto server;
nothing here sets endpoint_url, so that keeps working.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from gpubox.errors import (
    CapacityError,
    CredentialsError,
    GpuboxError,
    InvalidInput,
    NotFound,
    QuotaExceeded,
)

if TYPE_CHECKING:
    from gpubox.config import Settings
    from gpubox.state import State

DEFAULT_REGION = "us-east-1"
MAX_ATTEMPTS = 5
REGIONS_KEY = "aws.regions"
ADVICE_SERVICES = frozenset({"pricing", "service-quotas"})
# Tests only: a file each AWS call gpubox makes is appended to ("ec2:RunInstances"), which
# the suite compares with permissions.PERMISSIONS (tests/aws_calls.py). Off by default.
RECORD_CALLS_ENV = "GPUBOX_RECORD_CALLS"

CREDENTIALS_HINT = "run `aws configure`, or set AWS_PROFILE (or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)"

# Error codes, by what the user can do about them.
CAPACITY_CODES = frozenset(
    {
        "InsufficientInstanceCapacity",
        "InsufficientHostCapacity",
        "InsufficientReservedInstanceCapacity",
        "InsufficientCapacity",
        "InsufficientCapacityOnHost",
        "SpotMaxPriceTooLow",
    }
)
QUOTA_CODES = frozenset(
    {"VcpuLimitExceeded", "MaxSpotInstanceCountExceeded", "InstanceLimitExceeded"}
)
CREDENTIAL_CODES = frozenset(
    {
        "AuthFailure",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "ExpiredTokenException",
        "RequestExpired",
    }
)
INPUT_CODES = frozenset(
    {
        "InvalidParameterValue",
        "InvalidParameterCombination",
        "InvalidParameter",
        "ValidationError",
        "ValidationException",
        "MissingParameter",
        "InvalidAMIID.Malformed",
        "InvalidInstanceID.Malformed",
        "InvalidKeyPair.Format",
        "InvalidPermission.Malformed",
    }
)
# Throttling: safe to retry by hand where botocore's retries are turned off.
THROTTLE_CODES = frozenset({"RequestLimitExceeded", "Throttling", "ThrottlingException"})


class AwsSession:
    """One boto3 Session for one Settings; clients made once per (service, region, purpose)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._session: Any = None
        self._clients: dict[tuple[str, str, str], Any] = {}

    def boto(self) -> Any:
        with self._lock:
            return self._boto_locked()

    def _boto_locked(self) -> Any:
        if self._session is None:
            import boto3
            import botocore.exceptions

            try:
                self._session = boto3.Session(profile_name=self.settings.profile)
            except botocore.exceptions.ProfileNotFound as exc:
                # The name may come from AWS_PROFILE rather than the setting: ask botocore.
                raise profile_not_found(
                    exc.kwargs.get("profile") or self.settings.profile, "", self.settings
                ) from None
            record = os.environ.get(RECORD_CALLS_ENV)  # the suite's record of AWS calls
            if record:
                record_calls(self._session, record)
        return self._session

    def default_region(self) -> str:
        """settings.region, else boto3's configured region, else us-east-1."""
        from gpubox.validate import check_region

        if self.settings.region is not None:
            return check_region(self.settings.region, "from --region or the region setting")
        configured = self.boto().region_name
        if configured is not None:
            return check_region(
                configured, "from AWS_REGION, AWS_DEFAULT_REGION or the AWS profile's region"
            )
        return DEFAULT_REGION

    def client(self, service: str, region: str | None = None, purpose: str = "") -> Any:
        """A cached client. purpose="advice" and "read" (the listings that status and find
        make: offline, they must answer in a second or two, not after five tries) retry
        once only; purpose="launch" gives an EC2 client that never retries by itself:
        real AWS sends InsufficientInstanceCapacity as HTTP 500, which botocore would
        otherwise retry silently for tens of seconds before saying anything."""
        if not region:
            region = self.default_region()
        else:
            from gpubox.validate import check_region

            check_region(region)  # before any call there: a typo is one line, not a DNS error
        key = (service, region, purpose)
        with self._lock:
            found = self._clients.get(key)
            if found is None:
                from botocore.config import Config

                # Prices and quotas are advice before a launch (which answers for itself):
                # a service that is down or absent must not hold the command up.
                if service in ADVICE_SERVICES and not purpose:
                    purpose = "advice"
                attempts = {"launch": 1, "advice": 2, "once": 1, "read": 2}.get(purpose, MAX_ATTEMPTS)
                config = Config(
                    retries={"mode": "standard", "total_max_attempts": attempts},
                    connect_timeout=10,
                    read_timeout=60,
                    user_agent_extra="gpubox",
                )
                found = self._boto_locked().client(service, region_name=region, config=config)
                self._clients[key] = found
            return found


def record_calls(boto_session: Any, path: str) -> None:
    """Append "service:Operation" to `path` for every call this boto3 session's clients
    make (the suite sets GPUBOX_RECORD_CALLS)."""

    def note(model: Any = None, **_: Any) -> None:
        if model is None:
            return
        line = f"{model.service_model.service_name}:{model.name}\n".encode()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)  # one short write to an O_APPEND file: lines never mix
        finally:
            os.close(fd)

    boto_session.events.register("before-call", note)


@lru_cache(maxsize=16)
def aws_session(settings: Settings) -> AwsSession:
    """The AwsSession for these settings (Settings is frozen, so it can key a cache)."""
    return AwsSession(settings)


def client(settings: Settings, service: str, region: str | None = None, purpose: str = "") -> Any:
    return aws_session(settings).client(service, region, purpose)


def default_region(settings: Settings) -> str:
    return aws_session(settings).default_region()


def profile_not_found(
    name: str | None, prefix: str = "", settings: Settings | None = None
) -> CredentialsError:
    """A named AWS profile that no AWS file defines: which, where its name came from, and
    what to do (a typo in AWS_PROFILE is the usual cause)."""
    import os

    if settings is not None and settings.profile == name:
        origin = "the profile setting"
    elif os.environ.get("AWS_PROFILE") == name:
        origin = "AWS_PROFILE"
    else:
        origin = "AWS_DEFAULT_PROFILE" if os.environ.get("AWS_DEFAULT_PROFILE") == name else ""
    where = f" (named by {origin})" if origin else ""
    return CredentialsError(
        f"{prefix}AWS profile '{name}' is not configured{where}",
        hint=f"check its spelling, or run `aws configure --profile {name}`; "
        "`aws configure list-profiles` lists the profiles there are",
    )


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ClientError, or ""."""
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def map_error(exc: BaseException, doing: str = "") -> GpuboxError | None:
    """The gpubox error for a botocore exception, keeping the AWS code; None if not botocore's."""
    import botocore.exceptions as bex

    prefix = f"{doing}: " if doing else ""
    if isinstance(exc, (bex.NoCredentialsError, bex.PartialCredentialsError)):
        return CredentialsError(f"{prefix}no usable AWS credentials ({exc})", hint=CREDENTIALS_HINT)
    if isinstance(exc, bex.ProfileNotFound):
        return profile_not_found(exc.kwargs.get("profile"), prefix)
    if isinstance(exc, bex.NoRegionError):
        return InvalidInput(f"{prefix}no AWS region is set", hint="pass --region or set AWS_REGION")
    # Connection refused, DNS, a timeout, a connection closed mid-answer, TLS, a proxy.
    if isinstance(exc, (bex.ConnectionError, bex.HTTPClientError)):
        return GpuboxError(
            f"{prefix}cannot reach AWS ({exc})",
            hint="check the network connection (and a proxy, if you use one), then try again",
        )
    if isinstance(exc, bex.WaiterError):
        return GpuboxError(f"{prefix}{exc}")
    if not isinstance(exc, bex.ClientError):
        return None
    code = error_code(exc)
    text = exc.response.get("Error", {}).get("Message") or str(exc)
    message = f"{prefix}{text} (AWS {code})" if code else f"{prefix}{text}"
    if code in CAPACITY_CODES:
        return CapacityError(
            message, hint="try another availability zone, region or type, or try again later"
        )
    if code in QUOTA_CODES:
        return QuotaExceeded(
            message, hint="see `gpubox quota` for your vCPU quotas; an increase can be requested"
        )
    if code in CREDENTIAL_CODES:
        return CredentialsError(message, hint=CREDENTIALS_HINT)
    if code in ("UnauthorizedOperation", "AccessDenied", "AccessDeniedException"):
        return CredentialsError(
            message, hint="the AWS identity in use lacks this permission; ask the account admin"
        )
    if code.endswith("NotFound") or code == "ParameterNotFound":
        return NotFound(message)
    if code in INPUT_CODES or code.startswith("Invalid"):
        return InvalidInput(message)
    return GpuboxError(message)


@contextmanager
def aws_errors(doing: str = "") -> Iterator[None]:
    """Turn botocore exceptions raised inside into gpubox errors (the AWS code kept)."""
    try:
        yield
    except GpuboxError:
        raise
    except Exception as exc:
        mapped = map_error(exc, doing)
        if mapped is None:
            raise
        raise mapped from exc


def caller_identity(settings: Settings) -> dict[str, str]:
    """sts get-caller-identity: Account, Arn, UserId. Raises CredentialsError without credentials."""
    with aws_errors("checking AWS credentials"):
        found = client(settings, "sts").get_caller_identity()
    return {k: found[k] for k in ("Account", "Arn", "UserId") if k in found}


# What boto3 reads credentials from besides its two files (botocore's provider chain).
CREDENTIAL_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
)


def _may_have_credentials(settings: Settings) -> bool:
    """Whether any credentials are configured, without importing boto3 (~130 ms): none of
    its environment variables and neither of its files means nothing to ask with. (An EC2
    instance role alone is not seen here; gpubox asks AWS there once it has used AWS.)"""
    import os
    from pathlib import Path

    if settings.profile or any(os.environ.get(name) for name in CREDENTIAL_ENV):
        return True
    files = (
        os.environ.get("AWS_SHARED_CREDENTIALS_FILE") or "~/.aws/credentials",
        os.environ.get("AWS_CONFIG_FILE") or "~/.aws/config",
    )
    return any(Path(f).expanduser().is_file() for f in files)


def has_credentials(settings: Settings) -> bool:
    """Whether AWS must be asked: boto3 finds credentials (no network call when they are
    set), or a profile is named that does not work (asking says why: a typo in AWS_PROFILE
    must not hide every AWS box without a word)."""
    if not _may_have_credentials(settings):
        return False
    try:
        return aws_session(settings).boto().get_credentials() is not None
    except Exception:  # noqa: BLE001 - a broken profile is for the AWS listing to say
        return True


def credentials_source(settings: Settings) -> str:
    """Where the credentials in use come from, in words ("AWS profile 'lab'", "the keys in
    AWS_ACCESS_KEY_ID"), for an error about them; "" when that cannot be told."""
    try:
        session = aws_session(settings).boto()
        found = session.get_credentials()
    except Exception:  # noqa: BLE001 - a broken profile names itself in its own error
        return ""
    method = getattr(found, "method", "") if found is not None else ""
    if method == "env":
        return "the keys in AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
    if method in ("shared-credentials-file", "config-file", "sso", "assume-role",
                  "custom-process", "login"):
        return f"AWS profile '{session.profile_name}'"
    return f"AWS credentials from {method}" if method else ""


def used_regions(state: State) -> list[str]:
    """Regions gpubox has made something in (state key "aws.regions", a JSON list)."""
    raw = state.get(REGIONS_KEY)
    if not raw:
        return []
    try:
        regions = json.loads(raw)
    except ValueError:
        return []
    return [r for r in regions if isinstance(r, str)]


def remember_region(state: State, region: str) -> None:
    regions = used_regions(state)
    if region not in regions:
        state.put(REGIONS_KEY, json.dumps(sorted([*regions, region])))


def unlisted_warning(settings: Settings, exc: GpuboxError, last_seen: int) -> str:
    """The one line `status` prints when AWS could not list its boxes: why, with which
    credentials, what to do, and whether the AWS rows shown are only as last seen."""
    why = exc.message
    if isinstance(exc, CredentialsError) and "profile '" not in why:
        source = credentials_source(settings)
        why = f"{why}, with {source}" if source else why
    line = f"AWS boxes could not be listed: {why}"
    if exc.hint:
        line += f" ({exc.hint})"
    if last_seen:
        line += f"; the {last_seen} AWS box{'es' if last_seen > 1 else ''} below as last seen"
    return line
