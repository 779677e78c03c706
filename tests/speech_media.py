"""Test media with speech in it: espeak-ng says a sentence, PyAV muxes it over a moving picture.

`spoken_video` is the one to reach for: an mp4 (H.264 + AAC) whose audio says `sentence`
from `at_s` on, over a colour bar sliding across the frame, and it returns where the voice
really is (espeak-ng's own leading and trailing silence trimmed), so a test can assert that a
speech chunk covers it. `silent_video` has an audio track of digital silence, `no_audio_video`
none at all; `av_video` builds any of them from samples (any rate, any channel count).

espeak-ng runs as a child process: a tests/unit test that calls `speech`/`spoken_video` must be
marked ``impure`` (tests/unit/conftest.py). Small frames at 10 fps keep a 70 s clip near 1 s to
build.
"""

from __future__ import annotations

import subprocess
from fractions import Fraction
from io import BytesIO
from pathlib import Path
from typing import Final

import av
import numpy as np
import numpy.typing as npt
from av.audio.stream import AudioStream
from av.video.stream import VideoStream

Samples = npt.NDArray[np.float32]

ESPEAK: Final = "/usr/bin/espeak-ng"
ESPEAK_RATE: Final = 22050  # espeak-ng writes 22.05 kHz mono s16
_VOICE_FLOOR: Final = 1e-3  # |sample| above this counts as voice when trimming espeak's silence


def speech(sentence: str, *, seconds: float | None = None, words_per_minute: int = 160) -> Samples:
    """`sentence` spoken by espeak-ng as float32 mono at ESPEAK_RATE, silence trimmed at both ends.

    With `seconds`, the sentence is repeated (with espeak's own short pause between repeats)
    until the speech is at least that long: continuous speech of any length.
    """
    wav = subprocess.run(
        [ESPEAK, "--stdout", "-s", str(words_per_minute), sentence], check=True, capture_output=True, timeout=60
    ).stdout
    with av.open(BytesIO(wav), mode="r") as container:
        said = np.concatenate(
            [frame.to_ndarray().astype(np.float32).reshape(-1) for frame in container.decode(audio=0)]
        )
    said /= 32768.0
    voiced = np.flatnonzero(np.abs(said) > _VOICE_FLOOR)
    said = said[voiced[0] : voiced[-1] + 1] if voiced.size else said
    if seconds is None:
        return said
    gap = np.zeros(int(0.15 * ESPEAK_RATE), dtype=np.float32)  # shorter than any min_silence_s in use
    repeats = max(1, int(np.ceil(seconds * ESPEAK_RATE / (said.size + gap.size))))
    return np.concatenate([np.concatenate([said, gap])] * repeats)[: max(said.size, int(seconds * ESPEAK_RATE))]


def av_video(
    path: str | Path,
    duration_s: float,
    audio: Samples | None,
    *,
    sample_rate: int = ESPEAK_RATE,
    channels: int = 1,
    size: tuple[int, int] = (160, 120),
    fps: int = 10,
    audio_codec: str = "aac",
) -> None:
    """An mp4 (H.264, or mpeg4 without libx264) of `duration_s` with `audio` (mono float32 at
    `sample_rate`, copied to `channels` channels, padded with silence or cut to the video's
    length) as its audio track in `audio_codec`; no audio track when `audio` is None."""
    width, height = size
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), mode="w") as container:
        video = container.add_stream(codec, rate=fps)
        assert isinstance(video, VideoStream)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        time_base = video.time_base = Fraction(1, fps)  # the muxer changes the stream's
        if codec == "libx264":
            video.options = {"preset": "ultrafast", "crf": "30"}
        sound: AudioStream | None = None
        if audio is not None:
            added = container.add_stream(audio_codec, rate=sample_rate)
            assert isinstance(added, AudioStream)
            added.layout = _layout(channels)
            sound = added
        frames = max(1, round(duration_s * fps))
        for i in range(frames):
            picture = np.zeros((height, width, 3), dtype=np.uint8)
            picture[:, :] = (40, 40 + (i * 3) % 160, 120)
            x = (i * 4) % width
            picture[:, x : x + 16] = (230, 200, 40)
            frame = av.VideoFrame.from_ndarray(picture, "rgb24")
            frame.pts = i
            frame.time_base = time_base
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if sound is not None and audio is not None:
            _write_audio(container, sound, audio, sample_rate, channels, duration_s)


def _layout(channels: int) -> str:
    return {2: "stereo", 6: "5.1", 8: "7.1"}.get(channels, "mono")


def _write_audio(
    container: av.container.OutputContainer,
    stream: AudioStream,
    audio: Samples,
    sample_rate: int,
    channels: int,
    duration_s: float,
) -> None:
    total = int(duration_s * sample_rate)
    track = np.zeros(total, dtype=np.float32)
    track[: min(total, audio.size)] = audio[:total]
    layout = _layout(channels)
    accepted = stream.codec_context.codec.audio_formats or []
    fmt = accepted[0].name if accepted else "fltp"
    resampler = av.AudioResampler(format=fmt, layout=layout, rate=sample_rate)
    step = 4096
    for start in range(0, total, step):
        # Packed (interleaved) samples: PyAV's from_ndarray fails on planar frames of 8 channels.
        block = np.ascontiguousarray(np.repeat(track[start : start + step], channels)[None, :])
        frame = av.AudioFrame.from_ndarray(block, format="flt", layout=layout)
        frame.sample_rate = sample_rate
        frame.pts = start
        for converted in resampler.resample(frame):
            container.mux(stream.encode(converted))
    for converted in resampler.resample(None):
        container.mux(stream.encode(converted))
    container.mux(stream.encode(None))


def spoken_video(
    path: str | Path,
    sentence: str,
    at_s: float = 1.0,
    duration_s: float = 5.0,
    *,
    speech_s: float | None = None,
    sample_rate: int = 44100,
    size: tuple[int, int] = (160, 120),
    fps: int = 10,
) -> tuple[float, float]:
    """An mp4 (H.264 + AAC, `duration_s` long) whose audio says `sentence` starting at `at_s`
    over a moving colour picture; returns (start_s, end_s) of the voice in media seconds.

    `speech_s` repeats the sentence into continuous speech that long. The voice is cut at the
    end of the video if it would run past it.
    """
    said = speech(sentence, seconds=speech_s)
    if sample_rate != ESPEAK_RATE:
        said = _resampled(said, ESPEAK_RATE, sample_rate)
    lead = np.zeros(int(at_s * sample_rate), dtype=np.float32)
    av_video(path, duration_s, np.concatenate([lead, said]), sample_rate=sample_rate, size=size, fps=fps)
    return at_s, min(duration_s, at_s + said.size / sample_rate)


def silent_video(path: str | Path, duration_s: float = 5.0, *, sample_rate: int = 44100) -> None:
    """An mp4 (H.264 + AAC) whose audio track is digital silence."""
    av_video(path, duration_s, np.zeros(0, dtype=np.float32), sample_rate=sample_rate)


def no_audio_video(path: str | Path, duration_s: float = 5.0) -> None:
    """An mp4 (H.264) with no audio track at all."""
    av_video(path, duration_s, None)


def _resampled(samples: Samples, rate_in: int, rate_out: int) -> Samples:
    """Linear interpolation: enough for synthetic speech in tests (the pipeline resamples with FFmpeg)."""
    n_out = int(samples.size * rate_out / rate_in)
    positions = np.arange(n_out, dtype=np.float64) * rate_in / rate_out
    return np.interp(positions, np.arange(samples.size), samples).astype(np.float32)
