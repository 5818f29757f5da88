"""The AWS EC2 provider. Nothing here imports boto3 until a call needs it.

The names below load on first use (PEP 562): `status` with no AWS credentials imports
only `session` from here, to learn that, and not the provider's ~15 modules.
"""

from __future__ import annotations

from typing import Any

__all__ = ["AwsProvider", "choose_region", "monthly_storage_cost"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from gpubox.providers.aws import provider

        return getattr(provider, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
