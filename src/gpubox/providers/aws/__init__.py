"""The AWS EC2 provider. Nothing here imports boto3 until a call needs it."""

from __future__ import annotations

from gpubox.providers.aws.provider import AwsProvider, choose_region, monthly_storage_cost

__all__ = ["AwsProvider", "choose_region", "monthly_storage_cost"]
