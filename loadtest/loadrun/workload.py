"""The load test's media: a seeded mix of videos and still images, every one with fresh pixels.

vLLM's prefix cache reuses the KV blocks of a prompt it has already seen, image tokens
included, so a repeated file costs the caption stage almost nothing and would flatter the
throughput. Every object here is a photograph cropped, tinted, flipped and noised with its own
seed: no two objects share a frame.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from loadtest.media_factory import PHOTO_NAMES, RGB, make_montage_video, photo, resized

Kind = Literal["montage", "clip", "jpeg", "png"]
# Videos are what the pipeline is for; stills are the cheap, common case.
_KIND_WEIGHTS: dict[Kind, float] = {"montage": 0.35, "clip": 0.25, "jpeg": 0.25, "png": 0.15}
_SIZE = (192, 144)  # small frames: the 2-core test machine runs the whole stack


@dataclass(frozen=True)
class MediaItem:
    path: Path
    key: str  # the S3 object key it is uploaded as
    kind: Kind
    media_seconds: float  # 0 for a still image

    @property
    def is_video(self) -> bool:
        return self.kind in ("montage", "clip")


def fresh_picture(rng: random.Random, size: tuple[int, int]) -> RGB:
    """A photograph no other object has: random crop, channel gains, mirror and noise."""
    base = photo(rng.choice(PHOTO_NAMES[:6]))
    h, w = base.shape[:2]
    ch, cw = int(h * rng.uniform(0.6, 1.0)), int(w * rng.uniform(0.6, 1.0))
    y, x = rng.randrange(h - ch + 1), rng.randrange(w - cw + 1)
    crop = base[y : y + ch, x : x + cw].astype(np.float32)
    crop *= np.array([rng.uniform(0.75, 1.25) for _ in range(3)], dtype=np.float32)
    noise = np.random.default_rng(rng.getrandbits(32)).normal(0.0, 6.0, crop.shape).astype(np.float32)
    out = np.clip(crop + noise, 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return resized(np.ascontiguousarray(out), (int(size[0] * 1.3), int(size[1] * 1.3)))


def make_item(directory: Path, index: int, kind: Kind, rng: random.Random) -> MediaItem:
    stem = f"{index:04d}-{kind}"
    if kind in ("jpeg", "png"):
        path = directory / f"{stem}.{'jpg' if kind == 'jpeg' else 'png'}"
        picture = resized(fresh_picture(rng, _SIZE), _SIZE)
        Image.fromarray(picture).save(path, format=kind.upper(), **({"quality": 90} if kind == "jpeg" else {}))
        return MediaItem(path, f"loadtest/{path.name}", kind, 0.0)
    path = directory / f"{stem}.mp4"
    scenes = rng.randint(2, 3) if kind == "montage" else 1
    seconds_each = rng.uniform(1.5, 2.5)
    make_montage_video(path, [fresh_picture(rng, _SIZE) for _ in range(scenes)], seconds_each, fps=12, size=_SIZE)
    frames = max(1, round(seconds_each * 12))
    return MediaItem(path, f"loadtest/{path.name}", kind, scenes * frames / 12)


def make_workload(directory: Path, n: int, seed: int) -> list[MediaItem]:
    """``n`` objects; the kinds follow ``_KIND_WEIGHTS`` but every kind appears once ``n >= 4``."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    kinds: list[Kind] = list(_KIND_WEIGHTS)[: min(n, len(_KIND_WEIGHTS))]
    kinds += rng.choices(list(_KIND_WEIGHTS), weights=list(_KIND_WEIGHTS.values()), k=n - len(kinds))
    rng.shuffle(kinds)
    return [make_item(directory, i, kind, rng) for i, kind in enumerate(kinds)]
