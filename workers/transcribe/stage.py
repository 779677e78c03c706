"""Transcribe stage: one speech chunk -> one transcript, via the configured recognizer.

The recognizer answers in seconds from the chunk's start; the transcript's segment and word
times are made absolute here (and kept inside the chunk), so search and the page show the
moment in the media, like a caption's events.
"""

from __future__ import annotations

from redis.asyncio import Redis
from structlog.typing import FilteringBoundLogger

from schemas.speech import SpeechChunk, TimedText, Transcript
from workers.runtime.stage import ModelStage, RecordContext
from workers.settings import TranscribeSettings
from workers.state import ProgressStore
from workers.transcribe.backend import RelativeText, TranscribeBackend
from workers.transcribe.language import whisper_language


class TranscribeStage(ModelStage[SpeechChunk, TranscribeBackend]):
    name = "transcribe"
    input_model = SpeechChunk
    done_marker = "transcribed"

    def __init__(self, settings: TranscribeSettings, redis: Redis, backend: TranscribeBackend) -> None:
        progress = ProgressStore.for_worker(redis, settings)
        super().__init__(settings.topic_speech, settings.topic_transcripts, progress, backend)
        self.settings = settings

    async def run_model(self, item: SpeechChunk, ctx: RecordContext, log: FilteringBoundLogger) -> Transcript:
        language = self.settings.transcribe_language or whisper_language(item.language_hint)
        result = await self.backend.transcribe(item.flac, language)

        def absolute(texts: list[RelativeText]) -> list[TimedText]:
            return [
                TimedText(
                    start_s=min(item.start_s + max(t.start_s, 0.0), item.end_s),
                    end_s=min(item.start_s + max(t.end_s, t.start_s, 0.0), item.end_s),
                    text=t.text,
                )
                for t in texts
            ]

        transcript = Transcript(
            **item.segment_ref(),
            text=result.text.strip(),
            language=result.language or language,
            segments=absolute(result.segments),
            words=absolute(result.words),
            model=self.backend.model,
            backend=self.backend.name,  # type: ignore[arg-type]
            audio_s=item.end_s - item.start_s,
            latency_s=result.latency_s,
        )
        log.info(
            "speech_transcribed",
            latency_s=round(result.latency_s, 3),
            chars=len(transcript.text),
            language=transcript.language,
        )
        return transcript
