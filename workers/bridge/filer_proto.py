"""Just enough of SeaweedFS's ``filer_pb.EventNotification`` protobuf to bridge its events.

A hand-written wire-format reader instead of generated code: we need a dozen fields, and the
field numbers below were checked against payloads captured from ``weed`` 4.48
(tests/unit/data/seaweedfs_filer_events.json), not taken from memory. Unknown fields are skipped,
so newer SeaweedFS versions that add fields still parse.

    EventNotification: 1 old_entry, 2 new_entry, 3 delete_chunks, 4 new_parent_path,
                       5 is_from_other_cluster, 6 signatures (repeated int32)
    Entry:             1 name, 2 is_directory, 3 chunks, 4 attributes, 5 extended (map<string, bytes>)
    FileChunk:         2 offset, 3 size, 4 modified_ts_ns, 5 e_tag (base64 of the chunk's MD5)
    FuseAttributes:    1 file_size, 2 mtime (s), 7 mime, 14 md5
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


class FilerProtoError(ValueError):
    """The bytes are not a filer EventNotification."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise FilerProtoError("truncated or overlong varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) for each field; LEN values as bytes."""
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        value: int | bytes
        if wire == _VARINT:
            value, pos = _varint(buf, pos)
        elif wire == _LEN:
            size, pos = _varint(buf, pos)
            if pos + size > len(buf):
                raise FilerProtoError(f"field {number} overruns the message")
            value, pos = buf[pos : pos + size], pos + size
        elif wire == _I64:
            value, pos = int.from_bytes(buf[pos : pos + 8], "little"), pos + 8
        elif wire == _I32:
            value, pos = int.from_bytes(buf[pos : pos + 4], "little"), pos + 4
        else:
            raise FilerProtoError(f"unsupported wire type {wire} for field {number}")
        if number == 0 or pos > len(buf):
            raise FilerProtoError("malformed field")
        yield number, wire, value


def _text(value: int | bytes) -> str:
    if not isinstance(value, bytes):
        raise FilerProtoError("expected a string field")
    return value.decode("utf-8", errors="replace")


def _blob(value: int | bytes) -> bytes:
    if not isinstance(value, bytes):
        raise FilerProtoError("expected a bytes field")
    return value


def _int(value: int | bytes) -> int:
    if not isinstance(value, int):
        raise FilerProtoError("expected an integer field")
    return value


_Convert = Callable[[int | bytes], int | str | bytes]

# field number -> (attribute name, converter), for messages of plain scalar fields.
_CHUNK_FIELDS: dict[int, tuple[str, _Convert]] = {
    2: ("offset", _int),
    3: ("size", _int),
    4: ("modified_ts_ns", _int),
    5: ("e_tag", _text),
}
_ATTRIBUTE_FIELDS: dict[int, tuple[str, _Convert]] = {
    1: ("file_size", _int),
    2: ("mtime_s", _int),
    7: ("mime", _text),
    14: ("md5", _blob),
}


def _scalars(buf: bytes, spec: dict[int, tuple[str, _Convert]]) -> dict[str, int | str | bytes]:
    """The fields of `buf` that `spec` names, converted; the last occurrence wins, as in protobuf."""
    out: dict[str, int | str | bytes] = {}
    for number, _, value in _fields(buf):
        if number in spec:
            name, convert = spec[number]
            out[name] = convert(value)
    return out


@dataclass(frozen=True)
class FileChunk:
    offset: int = 0
    size: int = 0
    modified_ts_ns: int = 0
    e_tag: str = ""

    @classmethod
    def parse(cls, buf: bytes) -> FileChunk:
        return cls(**_scalars(buf, _CHUNK_FIELDS))  # type: ignore[arg-type]


@dataclass(frozen=True)
class Entry:
    name: str = ""
    is_directory: bool = False
    chunks: tuple[FileChunk, ...] = ()
    file_size: int = 0
    mtime_s: int = 0
    mime: str = ""
    md5: bytes = b""
    extended: dict[str, bytes] = field(default_factory=dict)

    @classmethod
    def parse(cls, buf: bytes) -> Entry:
        name, is_dir, chunks, extended = "", False, [], {}
        attrs: dict[str, int | str | bytes] = {}
        for number, _, value in _fields(buf):
            if number == 1:
                name = _text(value)
            elif number == 2:
                is_dir = bool(_int(value))
            elif number == 3:
                chunks.append(FileChunk.parse(_blob(value)))
            elif number == 4:
                attrs = _attributes(_blob(value))
            elif number == 5:
                key, item = _map_entry(_blob(value))
                extended[key] = item
        return cls(name=name, is_directory=is_dir, chunks=tuple(chunks), extended=extended, **attrs)  # type: ignore[arg-type]

    def header(self, name: str) -> str | None:
        """An extended attribute by case-insensitive name (S3 headers are stored as sent)."""
        wanted = name.lower()
        for key, value in self.extended.items():
            if key.lower() == wanted:
                return value.decode("utf-8", errors="replace")
        return None

    @property
    def etag(self) -> str | None:
        """The S3 ETag: what SeaweedFS's S3 gateway recorded (multipart: ``md5-N``), else
        the MD5 of a single-part object (ETag = hex MD5), else the lone chunk's MD5."""
        if stored := self.header("Seaweed-X-Amz-ETag"):
            return stored.strip('"')
        if self.md5:
            return self.md5.hex()
        if len(self.chunks) == 1 and self.chunks[0].e_tag:
            try:
                return base64.b64decode(self.chunks[0].e_tag, validate=True).hex()
            except (binascii.Error, ValueError):
                return None
        return None

    @property
    def content_ns(self) -> int:
        """When this content was written: the newest chunk's write time. Metadata changes
        (tagging, retention) keep the chunks, so they keep this value too."""
        newest = max((c.modified_ts_ns for c in self.chunks), default=0)
        return newest or self.mtime_s * 1_000_000_000


def _attributes(buf: bytes) -> dict[str, int | str | bytes]:
    return _scalars(buf, _ATTRIBUTE_FIELDS)


def _map_entry(buf: bytes) -> tuple[str, bytes]:
    key, value = "", b""
    for number, _, item in _fields(buf):
        if number == 1:
            key = _text(item)
        elif number == 2:
            value = _blob(item)
    return key, value


@dataclass(frozen=True)
class EventNotification:
    old_entry: Entry | None = None
    new_entry: Entry | None = None
    delete_chunks: bool = False
    new_parent_path: str = ""
    is_from_other_cluster: bool = False
    signatures: tuple[int, ...] = ()

    @classmethod
    def parse(cls, buf: bytes) -> EventNotification:
        old = new = None
        delete_chunks = other = False
        parent = ""
        signatures: list[int] = []
        for number, wire, value in _fields(buf):
            if number == 1:
                old = Entry.parse(_blob(value))
            elif number == 2:
                new = Entry.parse(_blob(value))
            elif number == 3:
                delete_chunks = bool(_int(value))
            elif number == 4:
                parent = _text(value)
            elif number == 5:
                other = bool(_int(value))
            elif number == 6:
                signatures += _packed_int32(value) if wire == _LEN else [_int(value)]
        if old is None and new is None:
            raise FilerProtoError("event has neither old_entry nor new_entry")
        return cls(old, new, delete_chunks, parent, other, tuple(signatures))


def _packed_int32(value: int | bytes) -> list[int]:
    buf, pos, out = _blob(value), 0, []
    while pos < len(buf):
        n, pos = _varint(buf, pos)
        out.append(n - (1 << 64) if n >= 1 << 63 else n)  # int32 negatives are 10-byte varints
    return out
