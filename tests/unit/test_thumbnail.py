"""Every segment carries a small thumbnail to the index, whatever the picture."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from loadtest.media_factory import make_image
from schemas.base import THUMBNAIL_MAX_BYTES
from workers.decode.dispatch import decode_segments
from workers.decode.policy import SegmentPolicy
from workers.decode.thumbnail import LONG_SIDE, make_thumbnail


@pytest.mark.parametrize("size", [(1920, 1080), (64, 640), (448, 448)])
def test_thumbnail_is_a_small_jpeg_with_the_aspect_kept(size: tuple[int, int]) -> None:
    noise = np.random.default_rng(3).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    blob = make_thumbnail(Image.fromarray(noise))
    assert 0 < len(blob) <= THUMBNAIL_MAX_BYTES  # noise is the worst case for JPEG
    with Image.open(io.BytesIO(blob)) as thumb:
        assert thumb.format == "JPEG" and max(thumb.size) <= LONG_SIDE
        assert abs(thumb.width / thumb.height - size[0] / size[1]) < 0.25 * size[0] / size[1]


def test_decoded_segments_carry_their_thumbnail(tmp_path: pytest.TempPathFactory) -> None:
    path = tmp_path / "still.png"  # type: ignore[operator]
    make_image(path, "PNG")
    [segment] = decode_segments(str(path), SegmentPolicy())
    with Image.open(io.BytesIO(segment.thumbnail)) as thumb:
        assert thumb.format == "JPEG"
