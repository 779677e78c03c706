"""Sampled-frame geometry (Qwen3-VL's 32 px grid), RGB conversion and JPEG encoding under a byte budget."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import av
from av.video.reformatter import VideoReformatter
from PIL import Image

PATCH = 32  # Qwen3-VL: one visual token per 32x32 px
MIN_QUALITY = 25
QUALITY_STEPS = (75, 65, 55, 45, 35, MIN_QUALITY)
_WHITE = (255, 255, 255, 255)


def target_size(width: int, height: int, max_pixels: int, multiple: int = PATCH) -> tuple[int, int]:
    """Largest `multiple`-aligned size with the source aspect ratio and at most `max_pixels`.

    Never larger than the source, except that each side is at least `multiple`. For extreme
    aspect ratios the `multiple` floor on the short side costs aspect accuracy, not the budget.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"invalid frame size {width}x{height}")
    scale = min(1.0, math.sqrt(max_pixels / (width * height)))
    # The epsilon keeps exact fits (e.g. 896 * 0.5) from flooring one step too far.
    w = max(multiple, int(width * scale + 1e-6) // multiple * multiple)
    h = max(multiple, int(height * scale + 1e-6) // multiple * multiple)
    if w * h > max_pixels:
        if w >= h:
            w = max(multiple, max_pixels // h // multiple * multiple)
        else:
            h = max(multiple, max_pixels // w // multiple * multiple)
    return w, h


def normalize_rotation(degrees: float) -> int:
    """Counter-clockwise display rotation snapped to 0, 90, 180 or 270."""
    return int(round(degrees / 90.0)) % 4 * 90


def display_size(width: int, height: int, rotation: int) -> tuple[int, int]:
    return (height, width) if rotation in (90, 270) else (width, height)


_TRANSPOSE = {
    90: Image.Transpose.ROTATE_90,  # PIL rotates counter-clockwise, like the display matrix angle
    180: Image.Transpose.ROTATE_180,
    270: Image.Transpose.ROTATE_270,
}


def _has_alpha(frame: av.VideoFrame) -> bool:
    fmt = frame.format
    # Palettes (GIF, PNG-8) can carry transparency too.
    return fmt.has_palette or any(c.is_alpha for c in fmt.components)


def _flatten(rgba: Image.Image) -> Image.Image:
    """Transparent pixels over white (what a viewer shows), not over whatever RGB they hide."""
    background = Image.new("RGBA", rgba.size, _WHITE)
    background.alpha_composite(rgba.convert("RGBA"))
    return background.convert("RGB")


def frame_to_image(
    frame: av.VideoFrame | Image.Image,
    size: tuple[int, int],
    rotation: int = 0,
    reformatter: VideoReformatter | None = None,
) -> Image.Image:
    """RGB image of `frame` at display `size` (width, height), applying a CCW `rotation`.

    A long-lived `reformatter` keeps FFmpeg's scaler between calls instead of rebuilding it.
    """
    if isinstance(frame, Image.Image):
        if frame.mode != "RGB":
            frame = _flatten(frame) if "A" in frame.getbands() or "transparency" in frame.info else frame.convert("RGB")
        return frame.resize(size, Image.Resampling.BOX) if frame.size != size else frame
    w, h = size
    coded_w, coded_h = (h, w) if rotation in (90, 270) else (w, h)
    alpha = _has_alpha(frame)
    converted = (reformatter or VideoReformatter()).reformat(
        frame, width=coded_w, height=coded_h, format="rgba" if alpha else "rgb24", interpolation="AREA"
    )
    # to_image() drops alpha, so RGBA goes through an array.
    image = _flatten(Image.fromarray(converted.to_ndarray())) if alpha else converted.to_image()
    if rotation in _TRANSPOSE:
        image = image.transpose(_TRANSPOSE[rotation])
    return image


def encode_jpeg(image: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def uniform_indices(n: int, keep: int) -> list[int]:
    """`keep` indices spread evenly over range(n), always including the first (and last if keep > 1)."""
    if keep >= n:
        return list(range(n))
    if keep <= 1:
        return [0]
    step = (n - 1) / (keep - 1)
    # floor(x + 0.5) rather than round(): banker's rounding can map two neighbours to one index.
    return [int(math.floor(i * step + 0.5)) for i in range(keep)]


@dataclass(frozen=True)
class EncodedFrame:
    pts_s: float
    width: int
    height: int
    jpeg: bytes


def encode_within_budget(
    images: Sequence[tuple[float, Image.Image]], quality: int, max_bytes: int
) -> list[EncodedFrame]:
    """JPEG-encode `(pts_s, image)` pairs so the total stays within `max_bytes`.

    Lowers quality step-wise first, then drops frames uniformly (keeping the first),
    and as a last resort shrinks the one remaining frame.
    """
    if not images:
        return []
    qualities = [quality, *(q for q in QUALITY_STEPS if q < quality)]
    blobs: list[bytes] = []
    for q in qualities:
        blobs = [encode_jpeg(image, q) for _, image in images]
        if sum(map(len, blobs)) <= max_bytes:
            return _pack(images, blobs, range(len(images)))
    for keep in range(len(images) - 1, 0, -1):
        chosen = uniform_indices(len(images), keep)
        if sum(len(blobs[i]) for i in chosen) <= max_bytes:
            return _pack(images, blobs, chosen)
    pts_s, image = images[0]
    blob = blobs[0]
    while len(blob) > max_bytes:
        w, h = image.size
        smaller = target_size(w, h, w * h // 2)
        if smaller == (w, h):
            break  # already at the 32x32 floor; SegmentPolicy keeps budgets above that
        image = image.resize(smaller, Image.Resampling.BOX)
        blob = encode_jpeg(image, qualities[-1])
    return [EncodedFrame(pts_s, image.width, image.height, blob)]


def _pack(
    images: Sequence[tuple[float, Image.Image]], blobs: Sequence[bytes], chosen: Sequence[int] | range
) -> list[EncodedFrame]:
    return [EncodedFrame(images[i][0], images[i][1].width, images[i][1].height, blobs[i]) for i in chosen]
