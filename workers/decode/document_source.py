"""A document's bytes where PDFium can read them: the first bytes of any source, to recognise
a PDF before FFmpeg probes it, and the whole object as a local file.

FFmpeg streams video from a presigned URL with range requests; PDFium instead reads a
document by random access (cross-reference table at the end, objects anywhere) and speaks no
HTTP. So a PDF that is not already a local file is copied to an anonymous temporary file and
read from there; its size was checked against CAPSTREAM_MAX_OBJECT_BYTES before decoding
(ObjectSource), so the copy is bounded too.

Recognising a PDF reads its first KiB: from the file, or from the first chunk an http(s)
reader already holds. A presigned URL is not read ahead of FFmpeg (that would add a request
to every video); it is asked for its first KiB only when FFmpeg found no media in it, so a
PDF there pays FFmpeg's failed probe first (up to its 5 MB probe size: all of a 584 KB PDF).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from io import RawIOBase
from pathlib import Path
from typing import IO, BinaryIO, Final

import httpx

from workers.decode.allowlist import DOCUMENT_HEAD_BYTES
from workers.decode.container import is_url

_COPY_CHUNK: Final = 1024 * 1024


class DocumentUnreadable(OSError):
    """The document's bytes could not be fetched (network, HTTP status): transient, retried.
    The message names the source redacted, never the presigned URL."""


def read_head(source: str | BinaryIO | RawIOBase, timeout_s: float) -> bytes:
    """The first DOCUMENT_HEAD_BYTES of `source`, or fewer (b"" when it cannot be read: the
    media decoder then reports that with its own error); a file object is left where it was."""
    if isinstance(source, str):
        if is_url(source):
            return _url_head(source, timeout_s)
        try:
            with Path(source).open("rb") as handle:
                return handle.read(DOCUMENT_HEAD_BYTES)
        except OSError:
            return b""
    position = source.tell()
    try:
        return _read_up_to(source, DOCUMENT_HEAD_BYTES)
    finally:
        source.seek(position)


def _read_up_to(handle: BinaryIO | RawIOBase, size: int) -> bytes:
    out = bytearray()
    while len(out) < size:
        data = handle.read(size - len(out))
        if not data:
            break
        out += data
    return bytes(out)


def _url_head(url: str, timeout_s: float) -> bytes:
    try:
        with (
            httpx.Client(timeout=timeout_s, follow_redirects=False) as client,
            client.stream("GET", url, headers={"Range": f"bytes=0-{DOCUMENT_HEAD_BYTES - 1}"}) as response,
        ):
            if response.status_code not in (200, 206):
                return b""
            out = bytearray()
            for data in response.iter_bytes():  # a server ignoring Range sends it all: stop early
                out += data
                if len(out) >= DOCUMENT_HEAD_BYTES:
                    break
            return bytes(out[:DOCUMENT_HEAD_BYTES])
    except httpx.HTTPError:
        return b""


@contextmanager
def local_copy(source: str | BinaryIO | RawIOBase, timeout_s: float, shown: str) -> Iterator[Path]:
    """`source` as a local file: a local path as it is, anything else copied to a temporary
    file that is deleted on exit."""
    if isinstance(source, str) and not is_url(source):
        yield Path(source)
        return
    with tempfile.NamedTemporaryFile(prefix="capstream-document-", suffix=".pdf") as copy:
        if isinstance(source, str):
            _download(source, copy, timeout_s, shown)
        else:
            source.seek(0)
            shutil.copyfileobj(source, copy, _COPY_CHUNK)
        copy.flush()
        yield Path(copy.name)


def _download(url: str, out: IO[bytes], timeout_s: float, shown: str) -> None:
    try:
        with (
            httpx.Client(timeout=timeout_s, follow_redirects=False) as client,
            client.stream("GET", url) as response,
        ):
            if response.status_code != 200:
                raise DocumentUnreadable(f"{shown}: HTTP {response.status_code} while reading the document")
            for data in response.iter_bytes(_COPY_CHUNK):
                out.write(data)
    except httpx.HTTPError as exc:
        # httpx quotes the request URL: the presigned query string must not reach a log.
        raise DocumentUnreadable(f"{shown}: reading the document failed ({type(exc).__name__})") from None
