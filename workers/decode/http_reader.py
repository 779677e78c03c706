"""http(s) sources read through a client that only ever connects to addresses it vetted.

FFmpeg's own http protocol resolves the host itself and follows redirects, so a check made
before av.open can be bypassed by a DNS answer that changes (rebinding) or a redirect to an
internal address. Here the host is resolved once, every address is vetted, the connection
goes to that address (Host header and TLS SNI/verification keep the real name), and every
redirect is vetted the same way before it is followed. The object's size must be known and
within the cap before decoding starts, and a byte counter enforces it while reading.

Presigned S3 URLs do not come here: the S3 endpoint is operator configuration, trusted, and
FFmpeg streams it with bounded range requests.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import Final
from urllib.parse import urljoin, urlsplit

import httpx

from workers.runtime.errors import PermanentError
from workers.runtime.outbound import Vet, pinned_request, vet_host

MAX_REDIRECTS: Final = 5
CHUNK: Final = 256 * 1024  # like the range requests FFmpeg makes for presigned URLs
_CONTENT_RANGE: Final = re.compile(r"bytes (\d+)-(\d+)/(\d+)")


@dataclass(frozen=True)
class HttpSource:
    """A vetted http(s) object: where to connect, what to ask for, how big it is."""

    url: str  # after redirects; shown only redacted
    address: str  # the vetted IP every request connects to
    size: int


class SourceUnreachable(OSError):
    """The event's http(s) source did not answer. Transient (retried, then dead-lettered): it
    is not our infrastructure, so it must not get the never-spend-a-try outage treatment that
    httpx's own ConnectError gets for a model server."""


def _get(client: httpx.Client, url: str, address: str, start: int, end: int) -> httpx.Response:
    target, headers, extensions = pinned_request(url, address)
    headers["Range"] = f"bytes={start}-{end}"
    request = client.build_request("GET", target, headers=headers, extensions=extensions)
    try:
        return client.send(request, stream=True)
    except httpx.TransportError as exc:
        raise SourceUnreachable(f"{urlsplit(url).hostname}: {type(exc).__name__}: {exc}") from exc


def open_http_source(
    client: httpx.Client, url: str, *, vet: Vet, max_bytes: int, shown: str
) -> tuple[HttpSource, bytes]:
    """Follow `url` through vetted redirects to the object; return it with its first bytes."""
    current = url
    for _ in range(MAX_REDIRECTS + 1):
        address = vet_host(current, vet)
        response = _get(client, current, address, 0, CHUNK - 1)
        try:
            if response.is_redirect:
                location = response.headers.get("location", "")
                current = urljoin(current, location)  # vetted at the top of the loop
                continue
            if response.status_code in (404, 410):
                raise PermanentError("object_not_found", f"{shown} does not exist (HTTP {response.status_code})")
            if response.status_code in (401, 403):
                raise PermanentError("access_denied", f"no read access to {shown} (HTTP {response.status_code})")
            response.raise_for_status()  # 5xx and others: transient, retried by the loop
            size = _total_size(response)
            if size > max_bytes:
                raise PermanentError(
                    "object_too_large", f"{shown} is {size} bytes, over CAPSTREAM_MAX_OBJECT_BYTES={max_bytes}"
                )
            if size == 0:
                raise PermanentError("empty_object", f"{shown} is empty")
            head = _read_at_most(response, CHUNK)
            return HttpSource(current, address, size), head
        finally:
            response.close()
    raise PermanentError("address_not_allowed", f"{shown}: more than {MAX_REDIRECTS} redirects")


def _total_size(response: httpx.Response) -> int:
    if response.status_code == 206 and (match := _CONTENT_RANGE.fullmatch(response.headers.get("content-range", ""))):
        return int(match.group(3))
    length = response.headers.get("content-length")
    if response.status_code == 200 and length is not None:
        return int(length)
    raise PermanentError(
        "unsupported_media", f"HTTP {response.status_code} without a usable size; byte ranges are required"
    )


def _read_at_most(response: httpx.Response, limit: int) -> bytes:
    out = bytearray()
    for data in response.iter_bytes():
        out += data[: limit - len(out)]
        if len(out) >= limit:
            break
    return bytes(out)


class HttpReader(io.RawIOBase):
    """Seekable file object over a vetted HttpSource: one range request per CHUNK, always to
    the vetted address, never following a redirect, never reading past `max_bytes` in total
    (FFmpeg seeks back and forth; the counter covers every byte fetched)."""

    def __init__(self, client: httpx.Client, source: HttpSource, head: bytes, *, max_bytes: int, shown: str) -> None:
        super().__init__()
        self._client = client
        self._source = source
        self._max_fetched = max(max_bytes, source.size) * 2  # re-reads after seeks, within reason
        self._shown = shown
        self._pos = 0
        self._buffer_start = 0
        self._buffer = head
        self.fetched = len(head)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            self._pos = offset
        elif whence == io.SEEK_CUR:
            self._pos += offset
        elif whence == io.SEEK_END:
            self._pos = self._source.size + offset
        else:  # FFmpeg's AVSEEK_SIZE (0x10000) asks for the size
            return self._source.size
        return self._pos

    def read(self, size: int = -1) -> bytes:
        if self._pos >= self._source.size:
            return b""
        offset = self._pos - self._buffer_start
        if not 0 <= offset < len(self._buffer):
            self._fill()
            offset = 0
        want = len(self._buffer) - offset if size < 0 else min(size, len(self._buffer) - offset)
        data = self._buffer[offset : offset + want]
        self._pos += len(data)
        return data

    def _fill(self) -> None:
        end = min(self._source.size, self._pos + CHUNK) - 1
        if self.fetched + (end - self._pos + 1) > self._max_fetched:
            raise PermanentError("object_too_large", f"{self._shown}: read {self.fetched} bytes, refusing to read more")
        response = _get(self._client, self._source.url, self._source.address, self._pos, end)
        try:
            if response.status_code != 206:
                # A redirect now would lead somewhere not vetted; a 200 would be the whole body.
                response.raise_for_status()
                raise OSError(f"{self._shown}: HTTP {response.status_code} to a range request")
            data = _read_at_most(response, end - self._pos + 1)
        finally:
            response.close()
        self.fetched += len(data)
        self._buffer_start, self._buffer = self._pos, data
        if not data:
            raise OSError(f"{self._shown}: empty range response at {self._pos}")

    def close(self) -> None:
        self._client.close()
        super().close()
