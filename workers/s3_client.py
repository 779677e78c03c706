"""One way to build an S3 client: custom endpoint for S3-compatible stores, path-style
addressing, credentials from the standard AWS chain (never from capstream settings)."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

from aiobotocore.session import get_session
from botocore.config import Config

from workers.settings import S3Settings


def s3_client(settings: S3Settings) -> AbstractAsyncContextManager[Any]:
    return get_session().create_client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        region_name=settings.s3_region,
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=10,
            read_timeout=60,
        ),
    )
