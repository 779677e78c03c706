"""Speech: the decode stage's speech chunks (inline FLAC) and the transcribe stage's transcripts.

A speech chunk is a stretch of the object's audio where a voice-activity detector heard
speech, cut at pauses and at most 30 s long (Whisper's window), resampled to 16 kHz mono and
FLAC-compressed inline (30 s of 16-bit 16 kHz speech is ~0.5-0.7 MB as FLAC, under the
broker's 1 MiB message limit). Its times, like a segment's, are absolute seconds of the media.
Its ``segment_id`` comes from ``schemas.ids.speech_segment_id``, so a chunk and a visual
segment of one object never share an id.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final, Literal, Self

from pydantic import Field, model_validator

from schemas.base import Message, SegmentRef, utc_now

SPEECH_SAMPLE_RATE: Final = 16_000
MAX_SPEECH_CHUNK_S = 30.0  # Whisper's window: a longer chunk is cut by the model itself


class SpeechChunk(SegmentRef):
    schema_version: Literal[1] = 1
    sample_rate: Literal[16000] = 16000
    flac: bytes = Field(min_length=1, description="16 kHz mono FLAC of [start_s, end_s] (base64 in JSON)")
    language_hint: str | None = Field(default=None, description="the audio stream's declared language tag, if any")
    decoded_at: datetime = Field(default_factory=utc_now)

    @model_validator(mode="after")
    def _at_most_a_window(self) -> Self:
        if self.end_s - self.start_s > MAX_SPEECH_CHUNK_S + 0.5:
            raise ValueError(f"a speech chunk lasts at most {MAX_SPEECH_CHUNK_S} s ({self.start_s}-{self.end_s})")
        return self


class TimedText(Message):
    """A stretch of the transcript (a Whisper segment, or one word) in absolute media seconds."""

    start_s: float = Field(ge=0)
    end_s: float = Field(ge=0)
    text: str

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.end_s < self.start_s:
            raise ValueError(f"text ends ({self.end_s}) before it starts ({self.start_s})")
        return self


TranscribeBackendName = Literal["vllm", "openai", "pocketsphinx"]


class Transcript(SegmentRef):
    """What was said in one speech chunk; its ``start_s``/``end_s`` are the chunk's."""

    schema_version: Literal[1] = 1
    text: str
    language: str | None = Field(default=None, description="ISO 639-1 code the recognizer used or detected")
    segments: list[TimedText] = Field(default_factory=list, description="timed stretches, absolute seconds")
    words: list[TimedText] = Field(default_factory=list, description="timed words, where the backend gives them")
    model: str
    backend: TranscribeBackendName
    audio_s: float = Field(ge=0, description="seconds of audio transcribed")
    latency_s: float = Field(ge=0, description="time the recognizer took for this chunk")
    created_at: datetime = Field(default_factory=utc_now)
