"""The chaos run's media and its ground truth, known from how each file was made.

The truth never goes through the decoder the workers run: a montage's segment boundaries are
the cut times ``make_montage_video`` returns (the pts of the first frame of each new picture)
and its end is frames / fps; a one-shot clip is one segment [0, frames / fps]; a still is one
segment [0, 0]. Every scene lasts 1.5-2.5 s (a spoken clip's one shot 3-3.8 s): above the cut
detector's ``min_scene_s`` (1 s) and below its window (4 s here), so each cut is one boundary and nothing else
is. The pictures of a montage are fresh crops of different photographs (``fresh_montage``: no
two objects share a frame, so vLLM's prefix cache cannot make a repeat cheap). Every other
montage and clip is spoken: espeak-ng says a fresh sentence (``fresh_speech``) from a drawn
time on, and the truth holds where the voice is (espeak's own silence trimmed), which the
object's speech chunks must cover. About 10% of the objects are poison (garbage bytes or a
truncated MP4): each must end ``failed`` with one dead letter.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from loadtest.chaos.verifier import Span
from loadtest.fresh_frames import fresh_montage, fresh_picture, fresh_speech
from loadtest.media_factory import make_corrupt_file

FPS = 12
SIZE = (192, 144)  # small frames: the 2-core machine runs the whole stack and the engines


@dataclass(frozen=True)
class MediaFile:
    path: Path
    poison: bool
    segments: tuple[Span, ...]  # empty for poison
    speech: tuple[Span, ...] = ()  # where the voice is, for a spoken video

    @property
    def tolerance_s(self) -> float:
        return 0.5 / FPS  # half a frame: any real boundary error is at least one frame


def _montage(path: Path, scenes: int, rng: random.Random, spoken: bool) -> MediaFile:
    # A spoken clip lasts 3-3.8 s (one shot, under the decoder's 4 s window): room for a sentence.
    seconds_each = rng.uniform(3.0, 3.8) if spoken and scenes == 1 else rng.uniform(1.5, 2.5)
    # The voice starts 0.3-0.8 s in and ends 0.5 s before the video does (a chunk padded by the
    # detector stays inside the media).
    speech = fresh_speech(rng, rng.uniform(0.3, 0.8), scenes * seconds_each - 1.3) if spoken else None
    cuts, end = fresh_montage(path, rng, scenes, seconds_each, FPS, SIZE, speech)
    bounds = [0.0, *cuts, end]
    voice = (Span(speech.at_s, speech.at_s + speech.seconds),) if speech is not None else ()
    return MediaFile(path, False, tuple(Span(a, b) for a, b in zip(bounds, bounds[1:], strict=False)), voice)


def make_media(directory: Path, n: int, seed: int) -> list[MediaFile]:
    """``n`` files in a seeded shuffle: ~10% poison, the rest montages, clips and stills, every
    other montage and clip spoken."""
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
            spoken = (i // 3) % 2 == 0
            path = directory / f"{i:04d}-{kind}{'-spoken' if spoken else ''}.mp4"
            files.append(_montage(path, rng.randint(2, 3) if kind == "montage" else 1, rng, spoken))
    rng.shuffle(files)
    return files
