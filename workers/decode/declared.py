"""The picture size an image file declares in its header, read without decoding it.

Pillow's format plugins parse only the header when constructed; Image.open would do the same
but refuses sizes over its own bomb limit without saying what the size was, and that limit
is process-global state. A size is a claim: decoders still enforce max_pixels on what they
allocate.
"""

from __future__ import annotations

from io import BytesIO

from PIL import Image

_PREFIX = 16  # what Pillow's accept() functions look at


def declared_size(head: bytes) -> tuple[int, int] | None:
    """(width, height) from the header in `head`, or None when no Pillow plugin parses it."""
    if (canvas := _webp_canvas(head)) is not None:
        return canvas  # Pillow's WebP plugin builds the animation decoder just to open it
    Image.init()  # every plugin (preinit has only the five most common)
    for name in Image.ID:
        factory, accept = Image.OPEN[name]
        if accept is not None and not accept(head[:_PREFIX]):
            continue
        try:
            image = factory(BytesIO(head), "")
        except Exception:  # noqa: BLE001 - any parse failure just means "not this format"
            continue
        width, height = image.size
        if width > 0 and height > 0:
            return int(width), int(height)
    return None


def _webp_canvas(head: bytes) -> tuple[int, int] | None:
    # RIFF....WEBP VP8X: flags(4) then canvas width-1 and height-1 as 24-bit little endian.
    if len(head) < 30 or head[:4] != b"RIFF" or head[8:16] != b"WEBPVP8X":
        return None
    return 1 + int.from_bytes(head[24:27], "little"), 1 + int.from_bytes(head[27:30], "little")
