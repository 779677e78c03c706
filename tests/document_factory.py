"""PDFs and TIFFs built byte by byte for the document tests: nothing is committed, and every
property a test relies on (page sizes, colours, page count, encryption) is set here.

PDFs are written by hand (objects, xref table, trailer) rather than with a PDF library, so a
page can declare any size and the file can be encrypted, which PDFium cannot write.
Encryption is the PDF standard security handler, revision 2 (RC4, 40-bit key): PDF 32000-1
section 7.6.3, algorithms 2 (file key), 3 (/O) and 4 (/U).
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

RGB = tuple[int, int, int]
PAGE_COLOURS: tuple[RGB, ...] = ((220, 30, 30), (30, 160, 40), (40, 60, 220), (230, 200, 20), (20, 20, 20))
_PAD = bytes.fromhex("28BF4E5E4E758A4164004E56FFFA01082E2E00B6D0683E802F0CA9FE6453697A")
_FILE_ID = bytes(range(16))
_PERMISSIONS = -44  # print and copy refused; a reader still needs the user password to open


@dataclass(frozen=True)
class Page:
    width: float  # PDF units (1/72 in)
    height: float
    colour: RGB  # the whole page is filled with it
    text_lines: int = 0  # lines of Helvetica text drawn on top, from the top left


def coloured_pages(count: int, width: float = 612, height: float = 792) -> list[Page]:
    """US-letter pages, page i filled with PAGE_COLOURS[i % 5]."""
    return [Page(width, height, PAGE_COLOURS[i % len(PAGE_COLOURS)]) for i in range(count)]


def _rc4(key: bytes, data: bytes) -> bytes:
    state = list(range(256))
    j = 0
    for i in range(256):
        j = (j + state[i] + key[i % len(key)]) % 256
        state[i], state[j] = state[j], state[i]
    out = bytearray()
    i = j = 0
    for byte in data:
        i = (i + 1) % 256
        j = (j + state[i]) % 256
        state[i], state[j] = state[j], state[i]
        out.append(byte ^ state[(state[i] + state[j]) % 256])
    return bytes(out)


def _number(value: float) -> str:
    # PDF numbers have no exponent: "1e+07" is not one (PDFium then falls back to US letter).
    return f"{value:.4f}".rstrip("0").rstrip(".")


def _padded(password: str) -> bytes:
    return (password.encode("latin-1") + _PAD)[:32]


@dataclass(frozen=True)
class _Encryption:
    key: bytes
    owner_entry: bytes
    user_entry: bytes

    @classmethod
    def revision2(cls, user_password: str, owner_password: str) -> _Encryption:
        owner_key = hashlib.md5(_padded(owner_password)).digest()[:5]
        owner_entry = _rc4(owner_key, _padded(user_password))
        permissions = _PERMISSIONS.to_bytes(4, "little", signed=True)
        key = hashlib.md5(_padded(user_password) + owner_entry + permissions + _FILE_ID).digest()[:5]
        return cls(key, owner_entry, _rc4(key, _PAD))

    def encrypt(self, number: int, data: bytes) -> bytes:
        object_key = hashlib.md5(self.key + number.to_bytes(3, "little") + b"\x00\x00").digest()[:10]
        return _rc4(object_key, data)

    def dictionary(self) -> bytes:
        return (
            f"<< /Filter /Standard /V 1 /R 2 /O <{self.owner_entry.hex()}> /U <{self.user_entry.hex()}> "
            f"/P {_PERMISSIONS} >>"
        ).encode()


def build_pdf(
    pages: Sequence[Page], *, user_password: str | None = None, owner_password: str = "owner", version: str = "1.4"
) -> bytes:
    """A PDF of `pages`; encrypted (RC4, 40 bit) when `user_password` is given ("" = opens
    without a password, like most encrypted PDFs in the wild)."""
    encryption = None if user_password is None else _Encryption.revision2(user_password, owner_password)
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(len(pages)))
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode()]
    for i, page in enumerate(pages):
        content_number = 4 + 2 * i
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {_number(page.width)} {_number(page.height)}] "
            f"/Contents {content_number} 0 R /Resources << /Font << /F1 << /Type /Font /Subtype /Type1 "
            "/BaseFont /Helvetica >> >> >> >>".encode()
        )
        r, g, b = (c / 255 for c in page.colour)
        content = f"{r:.4f} {g:.4f} {b:.4f} rg 0 0 {_number(page.width)} {_number(page.height)} re f".encode()
        if page.text_lines:
            lines = " ".join(f"(Line {n}: the quick brown fox jumps over the dog.) '" for n in range(page.text_lines))
            content += f" 0 g BT /F1 9 Tf 20 {_number(page.height - 20)} Td 11 TL {lines} ET".encode()
        if encryption is not None:
            content = encryption.encrypt(content_number, content)
        objects.append(b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream")
    extra = ""
    if encryption is not None:
        objects.append(encryption.dictionary())
        extra = f" /Encrypt {len(objects)} 0 R /ID [<{_FILE_ID.hex()}> <{_FILE_ID.hex()}>]"
    return _assemble(objects, f"/Size {len(objects) + 1} /Root 1 0 R{extra}".encode(), version)


def _assemble(objects: Sequence[bytes], trailer: bytes, version: str) -> bytes:
    out = bytearray(f"%PDF-{version}\n%\xe2\xe3\xcf\xd3\n".encode("latin-1"))
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< " + trailer + b" >>\nstartxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


def build_tiff(sizes_and_colours: Sequence[tuple[tuple[int, int], RGB]]) -> bytes:
    """A multi-page TIFF (deflate), one page per (size, colour)."""
    images = [Image.new("RGB", size, colour) for size, colour in sizes_and_colours]
    out = io.BytesIO()
    images[0].save(out, "TIFF", save_all=True, append_images=images[1:], compression="tiff_deflate")
    return out.getvalue()
