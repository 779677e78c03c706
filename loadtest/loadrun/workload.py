"""The load test's media: a seeded mix of videos (some spoken) and still images, every one with
fresh pixels and, when spoken, a fresh sentence (``fresh_speech``: a sentence, pitch and pace
drawn per object, so no recognizer cache sees a chunk twice).

vLLM's prefix cache reuses the KV blocks of a prompt it has already seen, image tokens
included, so a repeated file costs the caption stage almost nothing and would flatter the
throughput. Every object here is made of fresh pictures (``loadtest.fresh_frames``): no two
objects share a frame.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from PIL import Image

from loadtest.fresh_frames import fresh_montage, fresh_picture, fresh_speech

Kind = Literal["spoken", "montage", "clip", "jpeg", "png"]
# Videos are what the pipeline is for; stills are the cheap, common case. A spoken video is a
# montage with a sentence on its audio track: visual segments and one speech chunk.
_KIND_WEIGHTS: dict[Kind, float] = {"spoken": 0.2, "montage": 0.25, "clip": 0.2, "jpeg": 0.2, "png": 0.15}
_SIZE = (192, 144)  # small frames: the 2-core test machine runs the whole stack


@dataclass(frozen=True)
class MediaItem:
    path: Path
    key: str  # the S3 object key it is uploaded as
    kind: Kind
    media_seconds: float  # 0 for a still image
    speech_seconds: float = 0.0  # seconds of voice on its audio track

    @property
    def is_video(self) -> bool:
        return self.kind in ("spoken", "montage", "clip")


def make_item(directory: Path, index: int, kind: Kind, rng: random.Random) -> MediaItem:
    stem = f"{index:04d}-{kind}"
    if kind in ("jpeg", "png"):
        path = directory / f"{stem}.{'jpg' if kind == 'jpeg' else 'png'}"
        options = {"quality": 90} if kind == "jpeg" else {}
        Image.fromarray(fresh_picture(rng, _SIZE)).save(path, format=kind.upper(), **options)
        return MediaItem(path, f"loadtest/{path.name}", kind, 0.0)
    path = directory / f"{stem}.mp4"
    scenes = rng.randint(2, 3) if kind in ("montage", "spoken") else 1
    seconds_each = rng.uniform(1.5, 2.5)
    speech = fresh_speech(rng, rng.uniform(0.3, 0.8), scenes * seconds_each - 1.3) if kind == "spoken" else None
    _, seconds = fresh_montage(path, rng, scenes, seconds_each, 12, _SIZE, speech)
    return MediaItem(path, f"loadtest/{path.name}", kind, seconds, speech.seconds if speech else 0.0)


def make_workload(directory: Path, n: int, seed: int) -> list[MediaItem]:
    """``n`` objects; the kinds follow ``_KIND_WEIGHTS`` but the first four kinds (a spoken
    video, a montage, a clip, a JPEG) each appear once ``n >= 4``, every kind once ``n >= 5``."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    kinds: list[Kind] = list(_KIND_WEIGHTS)[: min(n, len(_KIND_WEIGHTS))]
    kinds += rng.choices(list(_KIND_WEIGHTS), weights=list(_KIND_WEIGHTS.values()), k=n - len(kinds))
    rng.shuffle(kinds)
    return [make_item(directory, i, kind, rng) for i, kind in enumerate(kinds)]
