"""The transcribe stage's own logic, around any recognizer: times made absolute and kept
inside the chunk, the language chosen (setting, then the stream's tag, then the recognizer's),
and the transcript's fields. The recognizers themselves run for real in
tests/integration/test_transcribe_backends.py."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import structlog
from redis.asyncio import Redis

from schemas.ids import speech_segment_id
from schemas.speech import SpeechChunk
from workers.settings import TranscribeSettings
from workers.transcribe.backend import Recognized, RelativeText
from workers.transcribe.language import whisper_language
from workers.transcribe.stage import TranscribeStage

OBJECT = str(uuid.uuid4())


class Recognizer:
    """Answers with fixed text and times relative to the chunk; records the language asked for."""

    name = "pocketsphinx"
    model = "test/recognizer"

    def __init__(self, answer: Recognized) -> None:
        self.answer = answer
        self.languages: list[str | None] = []

    async def start(self) -> None: ...
    async def close(self) -> None: ...

    async def transcribe(self, flac: bytes, language: str | None) -> Recognized:
        self.languages.append(language)
        return self.answer


def chunk(start_s: float, end_s: float, language_hint: str | None = None) -> SpeechChunk:
    return SpeechChunk(
        object_id=OBJECT,
        segment_id=speech_segment_id(OBJECT, 0),
        segment_index=0,
        source_uri="s3://media/talk.mp4",
        start_s=start_s,
        end_s=end_s,
        flac=b"fLaC",
        language_hint=language_hint,
    )


async def transcribe(item: SpeechChunk, answer: Recognized, **settings: Any) -> tuple[Any, Recognizer]:
    recognizer = Recognizer(answer)
    stage = TranscribeStage(TranscribeSettings(**settings), Redis(), recognizer)
    return await stage.run_model(item, None, structlog.get_logger()), recognizer  # type: ignore[arg-type]


async def test_times_become_absolute_and_stay_inside_the_chunk() -> None:
    answer = Recognized(
        text="  the elephant walked  ",
        language="en",
        latency_s=0.2,
        segments=[RelativeText(0.0, 2.5, "the elephant walked")],
        words=[RelativeText(0.1, 0.4, "the"), RelativeText(0.5, 1.2, "elephant"), RelativeText(1.9, 9.0, "walked")],
    )
    transcript, _ = await transcribe(chunk(40.0, 42.0), answer)
    assert transcript.text == "the elephant walked"
    assert [(w.start_s, w.end_s) for w in transcript.words] == [(40.1, 40.4), (40.5, 41.2), (41.9, 42.0)]
    assert [(s.start_s, s.end_s) for s in transcript.segments] == [(40.0, 42.0)]
    assert (transcript.start_s, transcript.end_s, transcript.segment_id) == (40.0, 42.0, speech_segment_id(OBJECT, 0))
    assert transcript.backend == "pocketsphinx" and transcript.model == "test/recognizer"
    assert transcript.audio_s == pytest.approx(2.0) and transcript.language == "en"


@pytest.mark.parametrize(
    ("setting", "hint", "asked"),
    [(None, "eng", "en"), (None, "und", None), (None, None, None), ("de", "eng", "de"), (None, "fr", "fr")],
)
async def test_the_language_asked_for(setting: str | None, hint: str | None, asked: str | None) -> None:
    answer = Recognized(text="hallo", language=None, latency_s=0.1)
    transcript, recognizer = await transcribe(chunk(0.0, 1.0, hint), answer, transcribe_language=setting)
    assert recognizer.languages == [asked]
    assert transcript.language == asked  # the recognizer said none: what it was asked for


def test_container_tags_map_to_whisper_codes() -> None:
    assert [whisper_language(t) for t in ("eng", "ger", "deu", "EN", "und", "", "xyz")] == [
        "en",
        "de",
        "de",
        "en",
        None,
        None,
        None,
    ]
