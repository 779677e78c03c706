"""The chaos run's media and its ground truth, known from how each file was made.

The truth never goes through the decoder the workers run: a montage's segment boundaries are
the cut times ``make_montage_video`` returns (the pts of the first frame of each new picture)
and its end is frames / fps; a one-shot clip is one segment [0, frames / fps]; a still is one
segment [0, 0]. Every scene lasts 1.5-2.5 s: above the cut detector's ``min_scene_s`` (1 s)
and below its window (``max_segment_s``, 10 s), so each cut is one boundary and nothing else
is. The pictures of a montage are fresh crops of different photographs (``fresh_montage``: no
two objects share a frame, so vLLM's prefix cache cannot make a repeat cheap). About 10% of the
objects are poison (garbage bytes or a truncated MP4): each must end ``failed`` with one dead
letter.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from loadtest.chaos.verifier import Span
from loadtest.fresh_frames import fresh_montage, fresh_picture
from loadtest.media_factory import make_corrupt_file

FPS = 12
SIZE = (192, 144)  # small frames: the 2-core machine runs the whole stack and the engines


@dataclass(frozen=True)
class MediaFile:
    path: Path
    poison: bool
    segments: tuple[Span, ...]  # empty for poison

    @property
    def tolerance_s(self) -> float:
        return 0.5 / FPS  # half a frame: any real boundary error is at least one frame


def _montage(path: Path, scenes: int, rng: random.Random) -> tuple[Span, ...]:
    cuts, end = fresh_montage(path, rng, scenes, rng.uniform(1.5, 2.5), FPS, SIZE)
    bounds = [0.0, *cuts, end]
    return tuple(Span(a, b) for a, b in zip(bounds, bounds[1:], strict=False))


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
            Image.fromarray(fresh_picture(rng, SIZE)).save(path, format="JPEG", quality=90)
            files.append(MediaFile(path, False, (Span(0.0, 0.0),)))
        else:
            path = directory / f"{i:04d}-{kind}.mp4"
            files.append(MediaFile(path, False, _montage(path, rng.randint(2, 3) if kind == "montage" else 1, rng)))
    rng.shuffle(files)
    return files
