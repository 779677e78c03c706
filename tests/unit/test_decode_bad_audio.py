"""Bad audio never fails the video (speech extraction, workers/decode/speech.py).

Each case is a small mp4 built here with PyAV from numpy samples (no espeak-ng, so these tests
are pure): damaged audio packets, an audio track without packets, 8 channels at 96 kHz, a
long silent track, and an audio bomb (a few packets declaring 10 hours). Each gives a clear
MediaError reason or no speech chunks, and where the video is fine its segments still come.
"""

from __future__ import annotations

import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from av.audio.stream import AudioStream
from av.video.stream import VideoStream

from tests.speech_media import av_video, no_audio_video, silent_video
from workers.decode.dispatch import decode_segments
from workers.decode.errors import MediaError
from workers.decode.policy import SegmentPolicy, SpeechPolicy
from workers.decode.sampling import DecodedSegment
from workers.decode.speech import DecodedSpeech

POLICY = SegmentPolicy(speech=SpeechPolicy())


def audio_bomb(path: Path, declared_s: float = 36_000.0, rate: int = 16_000) -> None:
    """2 s of video and three AAC packets, the last at `declared_s`: ~3 kB declaring 10 hours."""
    with av.open(str(path), mode="w") as container:
        video = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=10)
        assert isinstance(video, VideoStream)
        video.width, video.height, video.pix_fmt = 64, 64, "yuv420p"
        time_base = video.time_base = Fraction(1, 10)
        audio = container.add_stream("aac", rate=rate)
        assert isinstance(audio, AudioStream)
        audio.layout = "mono"
        for i in range(20):
            frame = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), "rgb24")
            frame.pts, frame.time_base = i, time_base
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        for pts in (0, 1024, int(declared_s * rate)):
            sound = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            sound.sample_rate, sound.pts, sound.time_base = rate, pts, Fraction(1, rate)
            container.mux(audio.encode(sound))
        container.mux(audio.encode(None))


def damaged_audio(path: Path, *, truncate: bool) -> None:
    """Noise over a video, then every audio packet's bytes garbled (or its tail zeroed)."""
    rng = np.random.default_rng(7)
    av_video(path, 4.0, (0.3 * rng.standard_normal(4 * 22050)).astype(np.float32))
    with av.open(str(path)) as container:
        spans = [(p.pos, p.size) for p in container.demux(container.streams.audio[0]) if p.size and p.pos is not None]
    blob = bytearray(path.read_bytes())
    for pos, size in spans:
        if truncate:
            blob[pos + size // 3 : pos + size] = bytes(size - size // 3)
        else:
            blob[pos : pos + size] = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(blob))


def empty_audio_track(path: Path) -> None:
    """An mp4 whose audio stream has no packets at all."""
    av_video(path, 2.0, np.zeros(0, np.float32), sample_rate=16_000)
    with av.open(str(path)) as source, av.open(str(path.with_suffix(".tmp.mp4")), mode="w") as out:
        video_in, audio_in = source.streams.video[0], source.streams.audio[0]
        video_out = out.add_stream_from_template(video_in)
        out.add_stream_from_template(audio_in)
        for packet in source.demux(video_in):
            if packet.size:
                packet.stream = video_out
                out.mux(packet)
    path.with_suffix(".tmp.mp4").replace(path)


def _split(items: list[DecodedSegment | DecodedSpeech]) -> tuple[list[DecodedSegment], list[DecodedSpeech]]:
    return [i for i in items if isinstance(i, DecodedSegment)], [i for i in items if isinstance(i, DecodedSpeech)]


def _build(kind: str, path: Path) -> None:
    if kind == "corrupt_packets":
        damaged_audio(path, truncate=False)
    elif kind == "truncated_packets":
        damaged_audio(path, truncate=True)
    elif kind == "empty_track":
        empty_audio_track(path)
    elif kind == "8ch_96khz":
        tone = 0.3 * np.sin(2 * np.pi * 220 * np.arange(2 * 96_000) / 96_000)
        av_video(path, 2.0, tone.astype(np.float32), sample_rate=96_000, channels=8)
    elif kind == "silent_track":
        silent_video(path, 3.0)
    elif kind == "no_audio":
        no_audio_video(path, 3.0)
    else:
        raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind", ["corrupt_packets", "truncated_packets", "empty_track", "8ch_96khz", "silent_track", "no_audio"]
)
def test_bad_audio_gives_no_speech_and_the_video_still_decodes(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"{kind}.mp4"
    _build(kind, path)
    segments, speech = _split(list(decode_segments(str(path), POLICY)))
    assert segments and segments[-1].reason == "end"
    assert segments[-1].end_s >= 1.9  # the whole video, not cut short by the audio
    assert speech == []  # noise, a tone, garbage and silence are not speech


def test_audio_bomb_is_refused_by_its_declared_duration(tmp_path: Path) -> None:
    audio_bomb(tmp_path / "bomb.mp4")
    assert (tmp_path / "bomb.mp4").stat().st_size < 8192
    with pytest.raises(MediaError) as refused:
        list(decode_segments(str(tmp_path / "bomb.mp4"), POLICY))
    assert refused.value.reason == "media_too_long"


def test_audio_bomb_allowed_by_the_limit_costs_its_packets_not_its_declared_time(tmp_path: Path) -> None:
    """With a limit over 10 hours the bomb decodes: the 10-hour hole is skipped, not filled
    with silence (which would be 576 M samples through the resampler and the energy gate)."""
    audio_bomb(tmp_path / "bomb.mp4")
    policy = SegmentPolicy(speech=SpeechPolicy(), max_duration_s=11 * 3600)
    started = time.perf_counter()
    segments, speech = _split(list(decode_segments(str(tmp_path / "bomb.mp4"), policy)))
    assert time.perf_counter() - started < 10  # ~0.05 s; filling the hole took minutes
    assert segments[-1].reason == "end" and speech == []


def test_a_long_silent_track_costs_decode_and_energy_gate_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """10 minutes of AAC silence: no window reaches silero-vad (the model is never loaded)."""
    path = tmp_path / "long_silent.mp4"
    av_video(path, 600.0, np.zeros(0, np.float32), sample_rate=16_000, fps=1)

    def no_model() -> None:
        raise AssertionError("the energy gate let a silent window through to the model")

    monkeypatch.setattr("workers.decode.vad.silero_model", no_model)
    segments, speech = _split(list(decode_segments(str(path), POLICY)))
    assert segments[-1].reason == "end" and segments[-1].end_s == pytest.approx(600.0, abs=1.5)
    assert speech == []
