"""The chaos run's media and its ground truth, known from how each file was made.

The truth never goes through the decoder the workers run: a montage's segment boundaries are
the cut times ``make_montage_video`` returns (the pts of the first frame of each new picture)
and its end is frames / fps; a one-shot clip is one segment [0, frames / fps]; a still is one
segment [0, 0]. Every scene lasts 1.5-2.5 s: above the cut detector's ``min_scene_s`` (1 s)
and below its window (``max_segment_s``, 10 s), so each cut is one boundary and nothing else
is. The pictures of a montage are different photographs (each cropped, tinted, mirrored and
noised with its own seed, so no two objects share a frame and vLLM's prefix cache cannot make
a repeat cheap); two crops of the same photograph might not read as a cut. About 10% of the
objects are poison (garbage bytes or a truncated MP4): each must end ``failed`` with one dead
letter.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from loadtest.chaos.verifier import Span
from loadtest.media_factory import PHOTO_NAMES, RGB, make_corrupt_file, make_montage_video, photo, resized

FPS = 12
SIZE = (192, 144)  # small frames: the 2-core machine runs the whole stack and the engines
# Distinct photographs whose luma histograms differ enough for the cut detector (hubble and
# page are left out: mostly black, mostly white).
_PHOTOS = tuple(name for name in PHOTO_NAMES if name not in ("hubble_deep_field", "page"))


@dataclass(frozen=True)
class MediaFile:
    path: Path
    poison: bool
    segments: tuple[Span, ...]  # empty for poison

    @property
    def tolerance_s(self) -> float:
        return 0.5 / FPS  # half a frame: any real boundary error is at least one frame


def _montage(path: Path, scenes: int, rng: random.Random) -> tuple[Span, ...]:
    seconds_each = rng.uniform(1.5, 2.5)
    pictures = [_fresh(name, rng) for name in rng.sample(_PHOTOS, scenes)]
    cuts = make_montage_video(path, pictures, seconds_each, fps=FPS, size=SIZE)
    end = scenes * max(1, round(seconds_each * FPS)) / FPS
    bounds = [0.0, *cuts, end]
    return tuple(Span(a, b) for a, b in zip(bounds, bounds[1:], strict=False))


def _fresh(name: str, rng: random.Random) -> RGB:
    """The photograph ``name``, tinted, maybe mirrored and noised: pixels no other object has."""
    picture = resized(photo(name), (int(SIZE[0] * 1.3), int(SIZE[1] * 1.3))).astype(np.float32)
    picture *= np.array([rng.uniform(0.8, 1.2) for _ in range(3)], dtype=np.float32)
    picture += np.random.default_rng(rng.getrandbits(32)).normal(0.0, 6.0, picture.shape).astype(np.float32)
    out = np.clip(picture, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(out[:, ::-1] if rng.random() < 0.5 else out)


def make_media(directory: Path, n: int, seed: int) -> list[MediaFile]:
    """``n`` files in a seeded shuffle: ~10% poison, the rest montages, clips and stills."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    n_poison = max(1, round(n * 0.1))
    files: list[MediaFile] = []
    for i in range(n):
        if i < n_poison:
            path = directory / f"{i:04d}-poison.mp4"
            make_corrupt_file(path, kind="garbage" if i % 2 == 0 else "truncated")
            files.append(MediaFile(path, True, ()))
            continue
        kind = ("montage", "clip", "still")[i % 3]
        if kind == "still":
            path = directory / f"{i:04d}-still.jpg"
            Image.fromarray(resized(_fresh(rng.choice(_PHOTOS), rng), SIZE)).save(path, format="JPEG", quality=90)
            files.append(MediaFile(path, False, (Span(0.0, 0.0),)))
        else:
            path = directory / f"{i:04d}-{kind}.mp4"
            files.append(MediaFile(path, False, _montage(path, rng.randint(2, 3) if kind == "montage" else 1, rng)))
    rng.shuffle(files)
    return files
