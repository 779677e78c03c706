"""The transcribe backends' pure parts: reading Whisper's timestamp tokens into segments as
vLLM 0.32's server does, the float WAV sent to it, FLAC in and out, pocketsphinx's tokens."""

from __future__ import annotations

import numpy as np
import pytest

from workers.runtime.errors import PermanentError
from workers.transcribe.recognition import INVALID_AUDIO, decode_speech, encode_speech
from workers.transcribe.sphinx import is_word, spoken_word, to_pcm16
from workers.transcribe.whisper import float_wav, recognized, timestamp_segments

TS = 1000  # id of <|0.00|> in these token lists
EOS = 5


def _decode(ids: list[int]) -> str:
    return "".join(f" w{i}" for i in ids)


def test_segments_are_closed_by_two_timestamps_in_a_row() -> None:
    # <|0.00|> 1 2 <|1.00|><|1.00|> 3 <|2.50|> <eos>
    tokens = [TS, 1, 2, TS + 50, TS + 50, 3, TS + 125, EOS]
    segments = timestamp_segments(tokens, TS, EOS, _decode)
    assert [(s.start_s, s.end_s, s.text) for s in segments] == [
        (0.0, 0.0, ""),  # the prompt's <|0.00|> and the first output token
        (0.0, 1.0, " w1 w2"),
        (1.0, 2.5, " w3"),
    ]
    result = recognized(segments, "en", 0.1)
    assert result.text == "w1 w2  w3" and [s.text for s in result.segments] == [" w1 w2", " w3"]
    assert recognized(segments, "ja", 0.1).text == "w1 w2 w3"


def test_words_no_timestamp_closes_are_not_in_the_transcript() -> None:
    assert timestamp_segments([1, 2, 3, EOS], TS, EOS, _decode) == []
    assert timestamp_segments([EOS], TS, EOS, _decode) == []
    assert timestamp_segments([], TS, EOS, _decode) == []


def test_float_wav_carries_the_samples_exactly() -> None:
    samples = np.random.default_rng(0).uniform(-1, 1, 1600).astype(np.float32)
    wav = float_wav(samples)
    assert wav[:4] == b"RIFF" and wav[8:12] == b"WAVE" and len(wav) == 44 + 4 * samples.size
    assert np.array_equal(decode_speech(wav), samples)


def test_flac_round_trip_and_refusals() -> None:
    tone = (0.5 * np.sin(np.arange(22050) * 2 * np.pi * 440 / 22050)).astype(np.float32)
    back = decode_speech(encode_speech(tone, 22050))
    assert back.dtype == np.float32 and back.size == 16000 and 0.45 < np.abs(back).max() <= 0.5
    assert decode_speech(encode_speech(np.zeros(0, dtype=np.float32))).size == 0
    for garbage in (b"", b"not audio", b"fLaC" + bytes(100)):
        with pytest.raises(PermanentError) as refused:
            decode_speech(garbage)
        assert refused.value.reason == INVALID_AUDIO


def test_pocketsphinx_tokens_and_dither() -> None:
    assert [spoken_word(t) for t in ("the(2)", "library", "don't(3)")] == ["the", "library", "don't"]
    assert not any(is_word(t) for t in ("<s>", "</s>", "<sil>", "[NOISE]", "++GARBAGE++", ""))
    silence = np.zeros(1600, dtype=np.float32)
    assert to_pcm16(silence) == to_pcm16(silence)  # fixed seed: one chunk, one input
    assert np.frombuffer(to_pcm16(silence), "<i2").std() > 50  # never exact digital silence
    assert np.frombuffer(to_pcm16(silence, dither_std=0), "<i2").max() == 0
