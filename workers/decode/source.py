"""Where the decoder reads an object from: a presigned S3 URL PyAV streams with bounded range
requests, or (when allowed by config) a local file or an HTTP(S) URL read through a vetted
client (http_reader.py).

Nothing is downloaded here: FFmpeg reads the presigned URL itself, 256 KiB per range request,
so memory stays bounded and a seek fetches only what it needs. Credentials come from the standard AWS
chain; the presigned URL carries the access key id and a signature, so it is never logged.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
import structlog
from botocore.exceptions import BotoCoreError, ClientError

from schemas.events import ObjectCreated
from workers.decode.container import redact
from workers.decode.http_reader import HttpReader, open_http_source
from workers.runtime.errors import PermanentError
from workers.runtime.outbound import address_refusal as address_refusal
from workers.s3_client import s3_client
from workers.settings import DecodeSettings

log = structlog.get_logger(__name__)

_NOT_FOUND = {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}
_FORBIDDEN = {"403", "AccessDenied", "Forbidden"}
# The request names something S3 will never serve (a bad version id, a key too long). A HEAD
# has no body, so most of these arrive as the bare status. RequestTimeout and expired tokens
# are 400s too, but transient: they are not listed.
_INVALID = {"400", "InvalidArgument", "InvalidRequest", "KeyTooLongError", "InvalidBucketName", "InvalidObjectName"}


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

    async def resolve(self, event: ObjectCreated, sized: Callable[[int], None] | None = None) -> str | HttpReader:
        """Where PyAV reads ``event``'s object; ``sized`` hears its size once checked (S3, file)."""
        scheme = event.scheme
        if scheme not in self._settings.allowed_scheme_set:
            raise PermanentError(
                "scheme_not_allowed",
                f"{scheme}:// sources are disabled (CAPSTREAM_ALLOWED_SCHEMES={self._settings.allowed_schemes})",
                object_id=event.object_id,
            )
        if scheme == "s3":
            return await self._presign(event, sized)
        if scheme == "file":
            path = Path(unquote(urlsplit(event.uri).path))
            size = await asyncio.to_thread(_file_size, path)
            if size is None:
                raise PermanentError("object_not_found", f"no such file: {path}", object_id=event.object_id)
            self._check_size(event, size, sized)
            return str(path)
        try:
            return await asyncio.to_thread(self._open_http, event.uri)
        except PermanentError as exc:
            raise PermanentError(exc.reason, str(exc), object_id=event.object_id) from exc

    def _open_http(self, url: str) -> HttpReader:
        """Vet the host and every redirect, check the size, and return a reader pinned to
        the vetted address (blocking: runs on a thread)."""
        settings = self._settings
        timeout = httpx.Timeout(settings.read_timeout_s)
        client = httpx.Client(
            timeout=timeout, follow_redirects=False, transport=httpx.HTTPTransport(retries=settings.read_retries)
        )
        vet = functools.partial(address_refusal, allow_private=settings.http_allow_private)
        shown = redact(url)
        try:
            source, head = open_http_source(client, url, vet=vet, max_bytes=settings.max_object_bytes, shown=shown)
        except BaseException:
            client.close()
            raise
        return HttpReader(client, source, head, max_bytes=settings.max_object_bytes, shown=shown)

    def ffmpeg_options(self, location: str | HttpReader) -> dict[str, str]:
        """FFmpeg protocol options for ``location``: reconnect on transient network/HTTP
        errors (each retry is a range request from where reading stopped)."""
        if not isinstance(location, str) or not location.startswith(("http://", "https://")):
            return {}
        retries = self._settings.read_retries
        if retries == 0:
            return {"reconnect": "0"}
        return {
            "reconnect": "1",
            "reconnect_on_network_error": "1",
            "reconnect_on_http_error": "429,5xx",
            "reconnect_max_retries": str(retries),
            "reconnect_delay_max": "8",
        }

    async def _presign(self, event: ObjectCreated, sized: Callable[[int], None] | None) -> str:
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
            if code in _INVALID:
                raise PermanentError(
                    "invalid_request", f"S3 refuses to serve {event.uri} ({code})", object_id=event.object_id
                ) from exc
            raise  # throttling, 5xx: transient, retried by the loop
        except BotoCoreError:
            raise  # endpoint unreachable, timeouts: transient
        self._check_size(event, int(head.get("ContentLength", 0)), sized)
        url: str = await self._client.generate_presigned_url(
            "get_object", Params=params, ExpiresIn=self._settings.presign_expiry_s
        )
        return url

    def _check_size(self, event: ObjectCreated, size: int, sized: Callable[[int], None] | None) -> None:
        if size > self._settings.max_object_bytes:
            raise PermanentError(
                "object_too_large",
                f"{event.uri} is {size} bytes, over CAPSTREAM_MAX_OBJECT_BYTES={self._settings.max_object_bytes}",
                object_id=event.object_id,
            )
        if size == 0:
            raise PermanentError("empty_object", f"{event.uri} is empty", object_id=event.object_id)
        if sized is not None:
            sized(size)


def _file_size(path: Path) -> int | None:
    return path.stat().st_size if path.is_file() else None
