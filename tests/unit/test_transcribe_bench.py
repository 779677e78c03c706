"""The transcribe bench compares like with like: its bare side is built from the worker's own
settings (model, language, decoder prompt, token cap, greedy) on the same speech, and the check
that runs before anything is timed (``differences``) fails on any one of them differing. Pure:
no engine, no espeak (the speech is a synthetic tone)."""

from __future__ import annotations

import dataclasses
import uuid

import numpy as np
import pytest

from loadtest import transcribe_bench as tb
from schemas.ids import speech_segment_id
from schemas.speech import SpeechChunk
from workers.settings import TranscribeSettings

OBJECT_ID = str(uuid.UUID(int=7, version=4))


def _speech(seconds: float, hz: float) -> np.ndarray:
    t = np.arange(int(seconds * 16_000)) / 16_000
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def _chunks(hint: str | None = None) -> tuple[list[SpeechChunk], list[np.ndarray]]:
    speech = [_speech(1.5, 220.0), _speech(2.0, 330.0)]
    chunks = [
        SpeechChunk(
            object_id=OBJECT_ID,
            segment_id=speech_segment_id(OBJECT_ID, i),
            segment_index=i,
            source_uri="file:///bench/x.mp4",
            start_s=3.0 * i,
            end_s=3.0 * i + s.size / 16_000,
            flac=b"fLaC",
            language_hint=hint,
        )
        for i, s in enumerate(speech)
    ]
    return chunks, speech


def _settings(**values: object) -> TranscribeSettings:
    base: dict[str, object] = {
        "transcribe_backend": "vllm",
        "transcribe_model": "/models/tiny-whisper",
        "transcribe_language": "en",
        "transcribe_max_tokens": 32,
    }
    return TranscribeSettings.model_validate(base | values)


def _worker_side(settings: TranscribeSettings, speech: list[np.ndarray], language: str) -> tb.Side:
    """What the worker's Whisper backend asks the engine (workers/transcribe/whisper.py's
    docstring): the server's verbose_json decoder prompt, greedy, the token cap from settings."""
    return tb.Side(
        model=settings.transcribe_model,
        language=language,
        decoder_prompt=f"<|startoftranscript|><|{language}|><|transcribe|><|0.00|>",
        max_tokens=settings.transcribe_max_tokens,
        temperature=0.0,
        max_batch=settings.transcribe_max_batch,
        audio=tb.audio_ids(speech),
    )


def test_the_bare_side_is_the_workers_from_the_same_settings() -> None:
    settings = _settings()
    chunks, speech = _chunks()
    bare = tb.bare_side(settings, chunks, speech)
    assert tb.differences(_worker_side(settings, speech, "en"), bare) == []
    assert (bare.max_tokens, bare.decoder_prompt, bare.temperature) == (
        32,
        "<|startoftranscript|><|en|><|transcribe|><|0.00|>",
        0.0,
    )


def test_other_settings_make_the_sides_differ() -> None:
    chunks, speech = _chunks()
    stage = _worker_side(_settings(), speech, "en")
    bare = tb.bare_side(_settings(transcribe_max_tokens=448), chunks, speech)
    assert tb.differences(stage, bare) == ["max_tokens: stage 32 != bare 448"]
    bare = tb.bare_side(_settings(transcribe_language="de"), chunks, speech)
    assert [d.split(":")[0] for d in tb.differences(stage, bare)] == ["language", "decoder_prompt"]
    bare = tb.bare_side(_settings(transcribe_model="/models/other"), chunks, speech)
    assert [d.split(":")[0] for d in tb.differences(stage, bare)] == ["model"]
    bare = tb.bare_side(_settings(transcribe_max_batch=64), chunks, speech)  # more in the engine at once
    assert tb.differences(stage, bare) == ["max_batch: stage 16 != bare 64"]


def test_other_audio_or_sampling_makes_the_sides_differ() -> None:
    settings = _settings()
    chunks, speech = _chunks()
    stage = _worker_side(settings, speech, "en")
    other_audio = [speech[0], tb.with_noise(speech[1], seed=1)]  # same length, other samples
    assert [d.split(":")[0] for d in tb.differences(stage, tb.bare_side(settings, chunks, other_audio))] == ["audio"]
    sampled = dataclasses.replace(tb.bare_side(settings, chunks, speech), temperature=0.7)
    assert tb.differences(stage, sampled) == ["temperature: stage 0.0 != bare 0.7"]
    no_timestamps = dataclasses.replace(
        stage, decoder_prompt=stage.decoder_prompt.replace("<|0.00|>", "<|notimestamps|>")
    )
    assert [d.split(":")[0] for d in tb.differences(no_timestamps, tb.bare_side(settings, chunks, speech))] == [
        "decoder_prompt"
    ]


def test_the_language_is_the_one_the_stage_would_pick() -> None:
    chunks, speech = _chunks(hint="deu")  # the stream's tag: used only when no language is set
    assert tb.bare_side(_settings(transcribe_language=None), chunks, speech).language == "de"
    assert tb.bare_side(_settings(), chunks, speech).language == "en"  # the setting wins, as in the stage
    with pytest.raises(ValueError, match="one given language"):
        tb.bare_side(_settings(transcribe_language=None), *_chunks())  # no hint, no setting: detection


def test_bare_prompts_carry_the_same_samples_and_the_sides_prompt() -> None:
    chunks, speech = _chunks()
    side = tb.bare_side(_settings(), chunks, speech)
    prompts = tb.bare_prompts(side, speech)
    assert [p["encoder_prompt"]["multi_modal_data"]["audio"][0] is s for p, s in zip(prompts, speech, strict=True)]
    assert all(p["encoder_prompt"]["multi_modal_data"]["audio"][1] == 16_000 for p in prompts)
    assert {p["decoder_prompt"] for p in prompts} == {side.decoder_prompt}


def test_noise_keeps_the_speech_and_its_length_but_no_cache_sees_it_twice() -> None:
    speech = _speech(1.0, 440.0)
    a, b = tb.with_noise(speech, 1), tb.with_noise(speech, 2)
    assert a.size == b.size == speech.size and a.dtype == np.float32
    assert tb.audio_ids([a]) != tb.audio_ids([b]) != tb.audio_ids([speech])
    assert np.corrcoef(a, speech)[0, 1] > 0.999  # -60 dBFS under a -10 dBFS tone


def test_summary_ratio_is_per_round_and_judged_against_the_goal() -> None:
    runs = [
        tb.Run("stage", 0, 4, 10.0, 2.0, 128),  # 5 audio-s/s
        tb.Run("bare", 0, 4, 10.0, 1.9, 128),
        tb.Run("bare", 1, 4, 10.0, 1.0, 128),  # 10
        tb.Run("stage", 1, 4, 10.0, 1.25, 128),  # 8: 0.8x
        tb.Run("stage", 2, 4, 10.0, 1.0, 128),
        tb.Run("bare", 2, 4, 10.0, 1.0, 128),
        tb.Run("faster-whisper", 0, 4, 10.0, 0.5),
        tb.Run("bare one call", 0, 4, 10.0, 1.0),  # 10: 0.5x
    ]
    s = tb.summarize(runs)
    assert s.stage_vs_bare == pytest.approx(0.95)  # median of 0.95, 0.8, 1.0
    assert s.meets_goal
    assert s.tokens["stage"] == pytest.approx(32.0) and "faster-whisper" not in s.tokens
    assert s.figures["faster-whisper"] == pytest.approx(20.0)
    text = tb.format_summary(s, 4, 10.0)
    assert "stage / bare       0.950x  (meets the goal >= 0.95x)" in text and "overhead" in text
    assert s.stage_vs_one_call == pytest.approx(0.5) and "stage / bare one call  0.500x" in text
    slow = tb.summarize([tb.Run("stage", 0, 4, 10.0, 2.0), tb.Run("bare", 0, 4, 10.0, 1.0)])
    assert not slow.meets_goal and "MISSES" in tb.format_summary(slow, 4, 10.0)
