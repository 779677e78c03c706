"""What the transcribe stage needs from a recognizer, whichever it is: one speech chunk's FLAC
in, its text with language and times (relative to the chunk) out.

Backends: Whisper on an in-process vLLM engine or a ``vllm serve`` endpoint
(``workers.transcribe.whisper``), and the offline pocketsphinx recognizer whose English model
ships in its wheel (``workers.transcribe.sphinx``): the demo's and tests' real words.
"""

from __future__ import annotations

from concurrent.futures import Executor
from typing import Protocol

from workers.runtime.continuous import OnStep
from workers.runtime.stage import ModelBackend
from workers.settings import TranscribeSettings
from workers.transcribe.recognition import INVALID_AUDIO, Recognized, RelativeText, decode_speech, encode_speech

__all__ = [
    "INVALID_AUDIO",
    "Recognized",
    "RelativeText",
    "TranscribeBackend",
    "decode_speech",
    "encode_speech",
    "make_transcribe_backend",
]


class TranscribeBackend(ModelBackend, Protocol):
    async def transcribe(self, flac: bytes, language: str | None) -> Recognized:
        """The chunk's transcript; ``language`` (ISO 639-1) if known, else the backend detects
        or assumes one. Raises PermanentError for audio it can never read."""
        ...


def make_transcribe_backend(
    settings: TranscribeSettings,
    engine_executor: Executor | None = None,
    on_step: OnStep | None = None,
) -> TranscribeBackend:
    """The configured recognizer; ``engine_executor``/``on_step`` are the in-process vLLM
    engine's (the thread every engine of the process shares, the step observer), unused by
    the HTTP client and pocketsphinx. Imports only the chosen backend's module."""
    if settings.transcribe_backend == "pocketsphinx":
        from workers.transcribe.sphinx import PocketsphinxBackend

        return PocketsphinxBackend(settings)
    if settings.transcribe_backend == "openai":
        from workers.transcribe.whisper import OpenAIWhisperBackend

        return OpenAIWhisperBackend(settings)
    from workers.transcribe.whisper import VllmWhisperBackend

    return VllmWhisperBackend(settings, engine_executor, on_step)
