"""Where boxes live. `get_provider` maps a provider name to its implementation,
importing it (and so boto3) only when it is asked for."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from gpubox.errors import InvalidInput, did_you_mean

if TYPE_CHECKING:
    from gpubox.config import Settings
    from gpubox.providers.base import Provider

PROVIDERS = ("aws", "ssh", "local")


def get_provider(
    name: str, settings: Settings, on_progress: Callable[[str], None] | None = None
) -> Provider:
    if name == "aws":
        from gpubox.providers.aws import AwsProvider

        return AwsProvider(settings, on_progress=on_progress)
    if name == "ssh":
        from gpubox.providers.ssh import SshProvider

        return SshProvider(settings, on_progress=on_progress)
    if name == "local":
        from gpubox.providers.local import LocalProvider

        return LocalProvider(settings)
    raise InvalidInput(
        f"unknown provider '{name}'",
        hint=did_you_mean(name, PROVIDERS) or f"choose one of: {', '.join(PROVIDERS)}",
    )
