"""Where the decoder reads an object from: a presigned S3 URL PyAV streams with bounded range
requests, or (when allowed by config) a local file or an HTTP(S) URL.

Nothing is downloaded here: FFmpeg reads the URL itself, 256 KiB per range request, so memory
stays bounded and a seek fetches only what it needs. Credentials come from the standard AWS
chain; the presigned URL carries the access key id and a signature, so it is never logged.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
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

# Cloud instance-metadata endpoints: an event payload must never make the worker fetch its
# own credentials. Link-local ranges (169.254/16, fe80::/10) are refused as a whole.
_METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata", "instance-data", "instance-data.ec2.internal"})
_METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200")
)


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
        await self._check_host(event)
        return event.uri

    def ffmpeg_options(self, location: str) -> dict[str, str]:
        """FFmpeg protocol options for ``location``: reconnect on transient network/HTTP
        errors (each retry is a range request from where reading stopped)."""
        if not location.startswith(("http://", "https://")):
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

    async def _check_host(self, event: ObjectCreated) -> None:
        """Refuse http(s) sources that point at metadata, link-local or (unless allowed)
        loopback/private addresses: event payloads are untrusted input."""
        host = (urlsplit(event.uri).hostname or "").lower()
        if not host:
            raise PermanentError("address_not_allowed", f"{event.uri!r} has no host", object_id=event.object_id)
        if host in _METADATA_HOSTS:
            raise PermanentError("address_not_allowed", f"{host} is a metadata endpoint", object_id=event.object_id)
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise PermanentError(
                "object_not_found", f"cannot resolve {host}: {exc.strerror}", object_id=event.object_id
            ) from exc
        for info in infos:
            reason = address_refusal(str(info[4][0]), allow_private=self._settings.http_allow_private)
            if reason:
                raise PermanentError(
                    "address_not_allowed", f"{host} resolves to {info[4][0]} ({reason})", object_id=event.object_id
                )

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


def address_refusal(address: str, *, allow_private: bool) -> str | None:
    """Why an http(s) source may not be fetched from ``address``, or None if it may.

    FFmpeg resolves the host again and follows redirects itself, so this check stops event
    payloads naming bad hosts, not a DNS server or web server that is hostile on purpose.
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip in _METADATA_ADDRESSES:
        return "metadata endpoint"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast or ip.is_unspecified or ip.is_reserved:
        return "not a unicast host"
    if not allow_private and (ip.is_loopback or ip.is_private):
        return "private address; CAPSTREAM_HTTP_ALLOW_PRIVATE=true allows it"
    return None


def _file_size(path: Path) -> int | None:
    return path.stat().st_size if path.is_file() else None
