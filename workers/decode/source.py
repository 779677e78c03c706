"""Where the decoder reads an object from: a presigned S3 URL PyAV streams with range
requests, or (when allowed by config) a local file or an HTTP(S) URL."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from schemas.events import ObjectCreated
from workers.runtime.errors import PermanentError
from workers.s3_client import s3_client
from workers.settings import DecodeSettings

log = structlog.get_logger(__name__)

_NOT_FOUND = {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}
_FORBIDDEN = {"403", "AccessDenied", "Forbidden"}


class ObjectSource:
    """Resolves an event to something ``av.open`` can read, enforcing scheme and size policy."""

    def __init__(self, settings: DecodeSettings) -> None:
        self._settings = settings
        self._client_cm: Any = None
        self._client: Any = None

    async def start(self) -> None:
        self._client_cm = s3_client(self._settings)
        self._client = await self._client_cm.__aenter__()

    async def close(self) -> None:
        if self._client_cm is not None:
            await self._client_cm.__aexit__(None, None, None)
            self._client_cm = self._client = None

    async def resolve(self, event: ObjectCreated) -> str:
        scheme = event.scheme
        if scheme not in self._settings.allowed_scheme_set:
            raise PermanentError(
                "scheme_not_allowed",
                f"{scheme}:// sources are disabled (CAPSTREAM_ALLOWED_SCHEMES={self._settings.allowed_schemes})",
                object_id=event.object_id,
            )
        if scheme == "s3":
            return await self._presign(event)
        if scheme == "file":
            path = Path(unquote(urlsplit(event.uri).path))
            size = await asyncio.to_thread(_file_size, path)
            if size is None:
                raise PermanentError("object_not_found", f"no such file: {path}", object_id=event.object_id)
            self._check_size(event, size)
            return str(path)
        return event.uri

    async def _presign(self, event: ObjectCreated) -> str:
        assert event.bucket and event.key and self._client is not None
        params = {"Bucket": event.bucket, "Key": event.key}
        if event.version_id and event.version_id != "null":
            params["VersionId"] = event.version_id
        try:
            head = await self._client.head_object(**params)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _NOT_FOUND:
                raise PermanentError(
                    "object_not_found", f"{event.uri} does not exist ({code})", object_id=event.object_id
                ) from exc
            if code in _FORBIDDEN:
                raise PermanentError(
                    "access_denied", f"no read access to {event.uri} ({code})", object_id=event.object_id
                ) from exc
            raise  # throttling, 5xx: transient, retried by the loop
        except BotoCoreError:
            raise  # endpoint unreachable, timeouts: transient
        self._check_size(event, int(head.get("ContentLength", 0)))
        url: str = await self._client.generate_presigned_url(
            "get_object", Params=params, ExpiresIn=self._settings.presign_expiry_s
        )
        return url

    def _check_size(self, event: ObjectCreated, size: int) -> None:
        if size > self._settings.max_object_bytes:
            raise PermanentError(
                "object_too_large",
                f"{event.uri} is {size} bytes, over CAPSTREAM_MAX_OBJECT_BYTES={self._settings.max_object_bytes}",
                object_id=event.object_id,
            )
        if size == 0:
            raise PermanentError("empty_object", f"{event.uri} is empty", object_id=event.object_id)


def _file_size(path: Path) -> int | None:
    return path.stat().st_size if path.is_file() else None
