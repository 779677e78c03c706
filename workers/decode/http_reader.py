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
import ipaddress
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

from workers.runtime.errors import PermanentError

# Cloud instance-metadata endpoints: an event payload must never make the worker fetch its
# own credentials. Link-local ranges (169.254/16, fe80::/10) are refused as a whole.
METADATA_HOSTS: Final = frozenset(
    {"metadata.google.internal", "metadata", "instance-data", "instance-data.ec2.internal"}
)
_METADATA_ADDRESSES: Final = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200")
)
MAX_REDIRECTS: Final = 5
CHUNK: Final = 256 * 1024  # like the range requests FFmpeg makes for presigned URLs
_CONTENT_RANGE: Final = re.compile(r"bytes (\d+)-(\d+)/(\d+)")

Vet = Callable[[str], str | None]  # address -> why it is refused, or None


def address_refusal(address: str, *, allow_private: bool) -> str | None:
    """Why an http(s) source may not be fetched from ``address``, or None if it may."""
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


@dataclass(frozen=True)
class HttpSource:
    """A vetted http(s) object: where to connect, what to ask for, how big it is."""

    url: str  # after redirects; shown only redacted
    address: str  # the vetted IP every request connects to
    size: int


def _pinned(url: str, address: str) -> tuple[str, dict[str, str], dict[str, str]]:
    """The request URL with the vetted address as host, the Host header, the TLS name."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    literal = f"[{address}]" if ":" in address else address
    netloc = literal + (f":{parts.port}" if parts.port else "")
    target = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
    header_host = parts.netloc.rpartition("@")[2]
    return target, {"Host": header_host}, {"sni_hostname": host} if parts.scheme == "https" else {}


def _vet_host(url: str, vet: Vet) -> str:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    shown = urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))
    if parts.scheme not in ("http", "https") or not host:
        raise PermanentError("address_not_allowed", f"{shown}: only http(s) URLs with a host are read")
    if host in METADATA_HOSTS:
        raise PermanentError("address_not_allowed", f"{host} is a metadata endpoint")
    try:
        infos = socket.getaddrinfo(
            host, parts.port or (443 if parts.scheme == "https" else 80), type=socket.SOCK_STREAM
        )
    except socket.gaierror as exc:
        raise PermanentError("object_not_found", f"cannot resolve {host}: {exc.strerror}") from exc
    addresses = [str(info[4][0]) for info in infos]
    for address in addresses:  # all of them: the resolver's order must not matter
        if reason := vet(address):
            raise PermanentError("address_not_allowed", f"{host} resolves to {address} ({reason})")
    return addresses[0]


class SourceUnreachable(OSError):
    """The event's http(s) source did not answer. Transient (retried, then dead-lettered): it
    is not our infrastructure, so it must not get the never-spend-a-try outage treatment that
    httpx's own ConnectError gets for a model server."""


def _get(client: httpx.Client, url: str, address: str, start: int, end: int) -> httpx.Response:
    target, headers, extensions = _pinned(url, address)
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
        address = _vet_host(current, vet)
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
