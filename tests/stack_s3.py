"""An aiobotocore S3 client for a local stack's endpoints, with its generated credentials."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

from aiobotocore.session import get_session

from workers.localstack import StackEndpoints


def stack_s3_client(ep: StackEndpoints, *, secret_key: str | None = None) -> AbstractAsyncContextManager[Any]:
    """``secret_key`` overrides the stack's secret (to prove a wrong one is rejected)."""
    return get_session().create_client(
        "s3",
        endpoint_url=ep.s3_endpoint_url,
        aws_access_key_id=ep.s3_access_key,
        aws_secret_access_key=secret_key or ep.s3_secret_key,
        region_name="us-east-1",
    )
