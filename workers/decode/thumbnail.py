"""The segment's thumbnail: a small JPEG that travels with the segment to the search index.

It is made on the decode thread from a frame already in memory, so showing a hit never
re-reads the source media. It rides inside every message of the segment (segment batch,
caption, embedding), so it must stay small: 192 px on the long side at quality 70 is
~4-9 KB for photos and video frames; the quality steps down, then the size halves, until it
fits ``THUMBNAIL_MAX_BYTES``.
"""

from __future__ import annotations

from PIL import Image

from schemas.base import THUMBNAIL_MAX_BYTES
from workers.decode.frames import encode_jpeg

LONG_SIDE = 192
_QUALITIES = (70, 55, 40, 25)


def make_thumbnail(image: Image.Image, max_bytes: int = THUMBNAIL_MAX_BYTES) -> bytes:
    """A JPEG of `image`, at most LONG_SIDE px on its long side and at most `max_bytes`."""
    thumb = image.convert("RGB")
    long_side = LONG_SIDE
    while True:
        scale = min(1.0, long_side / max(thumb.width, thumb.height))
        size = (max(1, round(thumb.width * scale)), max(1, round(thumb.height * scale)))
        small = thumb.resize(size, Image.Resampling.BOX) if size != thumb.size else thumb
        for quality in _QUALITIES:
            blob = encode_jpeg(small, quality)
            if len(blob) <= max_bytes:
                return blob
        if long_side <= 16:
            return blob[:0]  # noise no JPEG of 16 px can hold under the cap: no thumbnail
        long_side //= 2
