"""Segment batches whose frames no earlier run has shown the engine.

vLLM caches prefixes, multimodal inputs included: a second run over the same frames skips most
of the vision encoder and prefill, and would make whichever side runs second look faster. Each
run therefore draws its frames from a seeded generator: a photograph cropped at a random offset,
tinted, with a random block painted on, resized to what the decoder sends (``target_size`` of a
720p source under the decoder's default ``max_pixels``) and JPEG-encoded at the decoder's
quality. The frames look like decoder output (photographic, ~30-40 KB), so Kafka, base64 and
the image processor see realistic sizes, yet no two runs share a frame.
"""

from __future__ import annotations

import uuid
from functools import cache

import numpy as np
from PIL import Image

from loadtest import media_factory as mf
from schemas.ids import segment_id
from schemas.segments import Frame, SegmentBatch
from workers.decode.frames import encode_jpeg, target_size
from workers.settings import DecodeSettings

SOURCE_SIZE = (1280, 720)


@cache
def _photos() -> tuple[np.ndarray, ...]:
    return tuple(mf.resized(mf.photo(name), SOURCE_SIZE) for name in mf.PHOTO_NAMES)


def fresh_frame(rng: np.random.Generator, index: int, pts_s: float, size: tuple[int, int], quality: int) -> Frame:
    photos = _photos()
    image = photos[int(rng.integers(len(photos)))].astype(np.float32)
    w, h = size
    scale = float(rng.uniform(0.6, 1.0))
    cw, ch = int(SOURCE_SIZE[0] * scale), int(SOURCE_SIZE[1] * scale)
    x, y = int(rng.integers(SOURCE_SIZE[0] - cw + 1)), int(rng.integers(SOURCE_SIZE[1] - ch + 1))
    crop = image[y : y + ch, x : x + cw] * rng.uniform(0.7, 1.3, size=3)
    bw, bh = int(rng.integers(cw // 8, cw // 3)), int(rng.integers(ch // 8, ch // 3))
    bx, by = int(rng.integers(cw - bw)), int(rng.integers(ch - bh))
    crop[by : by + bh, bx : bx + bw] = rng.integers(0, 256, size=3)
    pil = Image.fromarray(np.clip(crop, 0, 255).astype(np.uint8)).resize(size, Image.Resampling.BILINEAR)
    return Frame(index=index, pts_s=pts_s, width=w, height=h, jpeg=encode_jpeg(pil, quality))


def fresh_segments(seed: int, count: int, frames_per_segment: int) -> list[SegmentBatch]:
    """``count`` video segments of ``frames_per_segment`` frames each, one frame a second."""
    decode = DecodeSettings()
    size = target_size(*SOURCE_SIZE, decode.max_pixels)
    rng = np.random.default_rng(seed)
    object_id = str(uuid.UUID(int=int(rng.integers(2**63)) << 64 | seed))
    segments = []
    for i in range(count):
        start = float(i * frames_per_segment)
        frames = [fresh_frame(rng, j, start + j, size, decode.jpeg_quality) for j in range(frames_per_segment)]
        segments.append(
            SegmentBatch(
                object_id=object_id,
                segment_id=segment_id(object_id, i),
                segment_index=i,
                source_uri=f"file:///bench/{object_id}.mp4",
                media_kind="video",
                start_s=start,
                end_s=start + frames_per_segment,
                reason="cut",
                frames=frames,
            )
        )
    return segments
