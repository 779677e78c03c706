"""Pictures, frames and videos that no earlier run has shown the engine.

vLLM caches prefixes, multimodal inputs included: a picture it has seen skips most of the
vision encoder and prefill, so a bench or load run that repeats one flatters whichever side
runs second, and a cached frame costs the caption stage almost nothing. Every bench, the load
run and the chaos run therefore draw their pictures here, from a seeded ``random.Random``: a
photograph cropped at a random offset, tinted per channel, noised and mirrored half the time.
A seed gives the same pictures again (a run can be repeated); two seeds share none. They stay
photographs, so JPEG sizes, Kafka records and the image processor's work are realistic.
"""

from __future__ import annotations

import io
import random
import uuid
from pathlib import Path

import numpy as np
from PIL import Image

from loadtest.media_factory import PHOTO_NAMES, RGB, Speech, make_montage_video, photo, resized, spoken
from schemas.ids import segment_id
from schemas.segments import Frame, SegmentBatch
from workers.decode.frames import encode_jpeg, target_size
from workers.settings import DecodeSettings

# Photographs whose luma histograms differ enough for the cut detector to see a cut between any
# two (hubble and page are left out: mostly black, mostly white).
PICTURES = tuple(name for name in PHOTO_NAMES if name not in ("hubble_deep_field", "page"))
NOISE_SIGMA = 6.0
SOURCE_SIZE = (1280, 720)  # the source the bench segments' frames are sized from


def freshen(picture: RGB, rng: random.Random) -> RGB:
    """``picture`` tinted per channel and noised: the same scene in pixels no other draw has."""
    out = picture.astype(np.float32) * np.array([rng.uniform(0.75, 1.25) for _ in range(3)], dtype=np.float32)
    out += np.random.default_rng(rng.getrandbits(64)).normal(0.0, NOISE_SIGMA, out.shape).astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)


def fresh_picture(rng: random.Random, size: tuple[int, int], name: str | None = None) -> RGB:
    """The photograph ``name`` (else one of PICTURES) cropped to 60-100% of each side at a random
    offset, freshened, mirrored half the time, scaled to ``size`` = (width, height)."""
    base = photo(name or rng.choice(PICTURES))
    h, w = base.shape[:2]
    ch, cw = int(h * rng.uniform(0.6, 1.0)), int(w * rng.uniform(0.6, 1.0))
    y, x = rng.randrange(h - ch + 1), rng.randrange(w - cw + 1)
    out = freshen(base[y : y + ch, x : x + cw], rng)
    return resized(np.ascontiguousarray(out[:, ::-1] if rng.random() < 0.5 else out), size)


def fresh_frame(rng: random.Random, index: int, pts_s: float, size: tuple[int, int], quality: int) -> Frame:
    """A fresh picture as the decoder sends a frame: ``size``, JPEG at ``quality``."""
    jpeg = encode_jpeg(Image.fromarray(fresh_picture(rng, size)), quality)
    return Frame(index=index, pts_s=pts_s, width=size[0], height=size[1], jpeg=jpeg)


def freshened(frame: Frame, rng: random.Random) -> Frame:
    """``frame`` with its picture freshened, re-encoded at the decoder's quality: another image to
    every cache, the same size and cost to the model."""
    with Image.open(io.BytesIO(frame.jpeg)) as image:
        picture = np.asarray(image.convert("RGB"))
    jpeg = encode_jpeg(Image.fromarray(freshen(picture, rng)), DecodeSettings().jpeg_quality)
    return frame.model_copy(update={"jpeg": jpeg})


def fresh_montage(
    path: Path,
    rng: random.Random,
    scenes: int,
    seconds_each: float,
    fps: int,
    size: tuple[int, int],
    speech: Speech | None = None,
) -> tuple[list[float], float]:
    """A video of ``scenes`` fresh pictures of different photographs (two crops of one might not
    read as a cut), each shown ``seconds_each``; returns its cut times and its length in seconds.
    ``speech``: an audio track with that voice in it (``fresh_speech``)."""
    margin = (int(size[0] * 1.3), int(size[1] * 1.3))  # room for the montage's pan, never scaled up
    pictures = [fresh_picture(rng, margin, name) for name in rng.sample(PICTURES, scenes)]
    cuts = make_montage_video(path, pictures, seconds_each, fps=fps, size=size, speech=speech)
    return cuts, scenes * max(1, round(seconds_each * fps)) / fps


# Words pocketsphinx's wheel model knows and espeak-ng says clearly; a sentence draws one of each.
_SUBJECTS = ("president", "company", "hospital", "minister", "teacher", "doctor", "council", "museum")
_VERBS = ("will open", "will visit", "has a problem with", "will speak about", "will close", "bought")
_OBJECTS = ("the restaurant", "the computer", "the new library", "the station", "the garden", "the market")
_TIMES = ("tomorrow morning", "in Washington", "next week", "on Monday", "this evening", "in the city")


def fresh_sentence(rng: random.Random) -> str:
    """A short news-like English sentence, one of ~1,700 (plus the voice's own variation)."""
    return f"The {rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_TIMES)}"


def fresh_speech(rng: random.Random, at_s: float, max_s: float | None = None) -> Speech:
    """A fresh sentence in a drawn pitch and pace from ``at_s`` on (cut to ``max_s`` of voice): audio
    no earlier draw has (an encoder cache would make a repeat cheap, as a prefix cache does)."""
    samples = spoken(fresh_sentence(rng), words_per_minute=rng.randint(140, 180), pitch=rng.randint(30, 70))
    speech = Speech(samples, 44100, at_s)
    return speech if max_s is None else Speech(samples[: int(max_s * speech.rate)], speech.rate, at_s)


def fresh_segments(seed: int, count: int, frames_per_segment: int) -> list[SegmentBatch]:
    """``count`` video segments of ``frames_per_segment`` frames each, one frame a second, sized
    (``target_size`` of a 720p source under the decoder's default ``max_pixels``) and encoded at
    the decoder's quality, so they look like its output."""
    decode = DecodeSettings()
    size = target_size(*SOURCE_SIZE, decode.max_pixels)
    rng = random.Random(seed)
    object_id = str(uuid.UUID(int=rng.getrandbits(63) << 64 | seed))
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
