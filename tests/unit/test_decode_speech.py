"""Speech chunks from the audio track (workers/decode/speech.py, wired in segmenter.py).

The media tests speak with espeak-ng (a child process: marked impure) through
tests/speech_media.py; the chunker and FLAC tests are pure numpy.
"""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import pytest

from tests.speech_media import spoken_video
from workers.decode.audio import RATE
from workers.decode.dispatch import decode_segments
from workers.decode.policy import SegmentPolicy, SpeechPolicy
from workers.decode.sampling import DecodedSegment
from workers.decode.speech import DecodedSpeech, _Chunker, encode_flac
from workers.decode.vad import WINDOW

SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank"
POLICY = SegmentPolicy(speech=SpeechPolicy())
W = WINDOW / RATE


@pytest.fixture(scope="module")
def spoken(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float, float]:
    path = tmp_path_factory.mktemp("speech") / "spoken.mp4"
    start, end = spoken_video(path, SENTENCE, at_s=3.0, duration_s=8.0)
    return path, start, end


def _flac_samples(flac: bytes) -> tuple[int, int, int]:
    with av.open(io.BytesIO(flac)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return stream.rate, stream.channels, samples


@pytest.mark.impure
def test_speech_at_a_known_time_gives_a_chunk_covering_it(spoken: tuple[Path, float, float]) -> None:
    path, start, end = spoken
    speech = [i for i in decode_segments(str(path), POLICY) if isinstance(i, DecodedSpeech)]
    assert [c.index for c in speech] == list(range(len(speech))) and speech
    assert speech[0].start_s <= start + 0.1 and speech[-1].end_s >= end - 0.1
    assert speech[0].start_s >= start - 0.6  # not the silence before it
    assert all(c.language is None for c in speech)  # the mp4 says "und"


@pytest.mark.impure
def test_every_speech_chunk_comes_before_the_final_segment(tmp_path: Path) -> None:
    # The voice runs to the video's end, so its chunk closes only when the audio ends: after
    # the video's last frame, and the final segment must wait for it.
    spoken_video(tmp_path / "to_the_end.mp4", SENTENCE, at_s=1.0, duration_s=3.0)
    items = list(decode_segments(str(tmp_path / "to_the_end.mp4"), POLICY))
    assert isinstance(items[-1], DecodedSegment) and items[-1].reason == "end"
    assert [i.reason for i in items if isinstance(i, DecodedSegment)].count("end") == 1
    assert any(isinstance(i, DecodedSpeech) for i in items)


@pytest.mark.impure
def test_without_a_speech_policy_the_segments_are_unchanged_and_no_speech_comes(
    spoken: tuple[Path, float, float],
) -> None:
    path, _, _ = spoken
    plain = list(decode_segments(str(path), SegmentPolicy()))
    assert all(isinstance(i, DecodedSegment) for i in plain)
    with_speech = [i for i in decode_segments(str(path), POLICY) if isinstance(i, DecodedSegment)]
    assert with_speech == plain


@pytest.mark.impure
def test_flac_decodes_to_16khz_mono_of_the_chunk_duration(spoken: tuple[Path, float, float]) -> None:
    path, _, _ = spoken
    for chunk in (i for i in decode_segments(str(path), POLICY) if isinstance(i, DecodedSpeech)):
        rate, channels, samples = _flac_samples(chunk.flac)
        assert (rate, channels) == (16_000, 1)
        assert samples / rate == pytest.approx(chunk.end_s - chunk.start_s, abs=0.002)


@pytest.mark.impure
def test_long_continuous_speech_is_cut_into_chunks_within_max_chunk_s(tmp_path: Path) -> None:
    start, end = spoken_video(tmp_path / "long.mp4", SENTENCE, at_s=1.0, duration_s=72.0, speech_s=70.0, fps=2)
    policy = SegmentPolicy(speech=SpeechPolicy(max_chunk_s=20.0), max_segment_s=30.0)
    speech = [i for i in decode_segments(str(tmp_path / "long.mp4"), policy) if isinstance(i, DecodedSpeech)]
    assert len(speech) >= 4  # 70 s in chunks of at most 20 s
    assert all(c.end_s - c.start_s <= 20.0 for c in speech)
    assert speech[0].start_s <= start + 0.1 and speech[-1].end_s >= end - 0.5
    assert all(a.end_s <= b.start_s + 1e-6 for a, b in zip(speech, speech[1:], strict=False))


# The chunker alone, on windows flagged by hand: pure.


def _run(chunker: _Chunker, flags: list[bool]) -> list[tuple[float, float]]:
    out = []
    for i, flag in enumerate(flags):
        out += chunker.add(i * W, np.full(WINDOW, i, np.float32), flag)
    out += chunker.close()
    return [(round(start, 3), round(start + samples.size / RATE, 3)) for start, samples in out]


def test_pauses_shorter_than_min_silence_merge_and_chunks_are_padded() -> None:
    flags = [False] * 50 + [True] * 20 + [False] * 10 + [True] * 20 + [False] * 60
    chunks = _run(_Chunker(SpeechPolicy(min_silence_s=0.5)), flags)
    pad = round(0.2 / W) * W
    assert chunks == [(round(50 * W - pad, 3), round(100 * W + pad, 3))]


def test_a_click_is_not_speech() -> None:
    assert _run(_Chunker(SpeechPolicy()), [False] * 20 + [True] * 3 + [False] * 40) == []


def test_a_stretch_over_max_chunk_s_is_cut_at_a_pause_else_hard() -> None:
    policy = SpeechPolicy(max_chunk_s=4.0, min_silence_s=0.5)
    flags = ([True] * 40 + [False] * 8) * 6  # 1.5 s of speech, 0.26 s pauses, for 9 s
    chunks = _run(_Chunker(policy), flags)
    assert len(chunks) >= 3 and all(end - start <= 4.0 + 1e-9 for start, end in chunks)
    assert all(a[1] == pytest.approx(b[0]) for a, b in zip(chunks, chunks[1:], strict=False))
    cuts = [round(end / W) for _, end in chunks[:-1]]
    assert all(not flags[k] and not flags[k - 1] for k in cuts)  # inside a pause, not a word
    hard = _run(_Chunker(policy), [True] * 300)  # 9.6 s without a pause
    assert [round(end - start, 2) for start, end in hard][:2] == [round(int(4.0 / W) * W, 2)] * 2


def test_flac_round_trips_16khz_mono() -> None:
    tone = (0.5 * np.sin(2 * np.pi * 300 * np.arange(RATE) / RATE)).astype(np.float32)
    assert _flac_samples(encode_flac(tone)) == (16_000, 1, RATE)
