"""The offline recognizer: CMU pocketsphinx with the US-English acoustic model, language model and
dictionary that ship inside its wheel (``pocketsphinx.get_model_path()``), so real words come out
with no download. The demo's and tests' profile, not a production choice: English only, and
far less accurate than Whisper.

What it gets right from espeak-ng's default English voice (measured 2026-12, 16 runs each of
three sentences over paddings 0-1 s and four dither seeds): "The president will speak to the
nation tomorrow morning" -> president, speak, tomorrow, morning 16/16 (to 6/16, nation 5/16);
"The company will open a new restaurant in Washington" -> company, restaurant, washington
16/16; "The hospital has a problem with the computer" -> problem, computer 16/16. Word recall
over 16 espeak sentences: 0.73. Isolated words (no sentence around them) fail far more often:
the language model wants context.

Three details matter:

- Digital silence. Synthesized speech (and padding) has stretches of exact zeros, on which the
  front end's log energies and batch cepstral mean go wrong: recall on the 16 sentences was 0.18
  with them and 0.73 once a faint fixed-seed noise (std 100 of 32768, about -50 dBFS) was added.
  Real recordings have a noise floor of their own; the dither is below it, and its fixed seed
  keeps a chunk's transcript deterministic.
- One call per chunk (``process_raw(full_utt=True)``): the cepstral mean is then the chunk's
  own (batch CMN). Fed in blocks, the decoder starts from a running estimate carried over from
  the previous chunk, so a chunk's words depended on the chunk before it, and were worse
  ("if the company or you know you restaurant" vs "the company will open a new restaurant").
- The GIL. ``Decoder.process_raw`` holds it for the whole call (~0.2 s per second of audio
  here, ~6 s for a 30 s chunk), which on a thread would stall the event loop (Kafka
  heartbeats, every other stage of ``capstream run``). So recognition runs in worker
  processes (spawned, one decoder each, at most min(CAPSTREAM_TRANSCRIBE_MAX_BATCH, CPUs)),
  which also recognize chunks in parallel; the FLAC is decoded there too.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import re
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any

from schemas.speech import SPEECH_SAMPLE_RATE
from workers.runtime.errors import PermanentError
from workers.settings import TranscribeSettings
from workers.transcribe.recognition import Recognized, RelativeText, decode_speech

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

POCKETSPHINX_MODEL = "cmusphinx/en-us"  # recorded in transcripts unless CAPSTREAM_TRANSCRIBE_MODEL_NAME says otherwise
LANGUAGE = "en"
DITHER_STD = 100.0  # in 16-bit sample units (~-50 dBFS): see the module docstring
DITHER_SEED = 0
_ALTERNATE = re.compile(r"\(\d+\)$")  # "the(2)": the dictionary's second pronunciation of "the"


def is_word(token: str) -> bool:
    """A recognized word, not a filler: ``<s>``, ``</s>``, ``<sil>``, ``[NOISE]``, ``++GARBAGE++``."""
    return bool(token) and not token.startswith(("<", "[", "+"))


def spoken_word(token: str) -> str:
    """The word of a dictionary entry: "the(2)" -> "the"."""
    return _ALTERNATE.sub("", token)


def to_pcm16(samples: npt.NDArray[np.float32], dither_std: float = DITHER_STD) -> bytes:
    """16-bit little-endian PCM of float samples, with a fixed-seed dither (see module docstring)."""
    import numpy as np

    pcm = samples.astype(np.float64) * 32767.0
    if dither_std > 0 and pcm.size:
        pcm += np.random.default_rng(DITHER_SEED).normal(0.0, dither_std, pcm.size)
    return np.clip(np.rint(pcm), -32768, 32767).astype("<i2").tobytes()


# --- in the recognizer processes -------------------------------------------------------------

_decoder: Any = None  # this process's pocketsphinx.Decoder


def _load_decoder() -> None:
    """Process initializer: the wheel's en-us acoustic model, language model and dictionary
    (pocketsphinx's defaults)."""
    global _decoder
    from pocketsphinx import Decoder

    _decoder = Decoder(samprate=SPEECH_SAMPLE_RATE, loglevel="FATAL")


def _ready() -> bool:
    return _decoder is not None


def _recognize_or_refuse(flac: bytes) -> Recognized | tuple[str, str]:
    """``recognize``, with a refusal returned as (reason, message): PermanentError does not
    survive pickling (its constructor takes the reason first)."""
    try:
        return recognize(flac)
    except PermanentError as exc:
        return exc.reason, str(exc)


def recognize(flac: bytes) -> Recognized:
    """One chunk's words (in a recognizer process); PermanentError(INVALID_AUDIO) for bytes
    that are not audio."""
    samples = decode_speech(flac)
    if not samples.size:
        return Recognized(text="", language=LANGUAGE, latency_s=0.0)
    started = time.perf_counter()
    decoder = _decoder
    decoder.start_utt()
    decoder.process_raw(to_pcm16(samples), full_utt=True)
    decoder.end_utt()
    frame_rate = float(decoder.config["frate"])
    words = [
        RelativeText(
            start_s=seg.start_frame / frame_rate,
            end_s=(seg.end_frame + 1) / frame_rate,
            text=spoken_word(seg.word),
        )
        for seg in decoder.seg() or ()  # None when nothing was decoded
        if is_word(seg.word)
    ]
    text = " ".join(w.text for w in words)
    segments = [RelativeText(words[0].start_s, words[-1].end_s, text)] if words else []
    return Recognized(
        text=text,
        language=LANGUAGE,
        latency_s=time.perf_counter() - started,
        segments=segments,
        words=words,
    )


# --- in the worker --------------------------------------------------------------------------


class PocketsphinxBackend:
    """English speech to text with word times, in recognizer processes (see module docstring)."""

    name = "pocketsphinx"

    def __init__(self, settings: TranscribeSettings) -> None:
        self.settings = settings
        self.model = settings.transcribe_model_name or POCKETSPHINX_MODEL
        self.processes = max(1, min(settings.transcribe_max_batch, os.cpu_count() or 1))
        self._pool: ProcessPoolExecutor | None = None

    def _new_pool(self) -> ProcessPoolExecutor:
        # spawn, not fork: the worker has threads (an engine thread, Kafka clients) to not copy.
        return ProcessPoolExecutor(
            max_workers=self.processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_load_decoder,
        )

    async def start(self) -> None:
        self._pool = self._new_pool()
        loop = asyncio.get_running_loop()
        # Start every process and load its decoder now, not on the first chunks.
        await asyncio.gather(*(loop.run_in_executor(self._pool, _ready) for _ in range(self.processes)))

    async def transcribe(self, flac: bytes, language: str | None) -> Recognized:
        """English whatever ``language`` says (the only model it has); the result's language is "en"."""
        if self._pool is None:
            raise RuntimeError("PocketsphinxBackend.start() was not awaited")
        pool = self._pool
        try:
            result = await asyncio.wait_for(
                asyncio.get_running_loop().run_in_executor(pool, _recognize_or_refuse, flac),
                self.settings.transcribe_request_timeout_s,
            )
        except BrokenProcessPool:
            # A recognizer process died (killed, or crashed in C): a fresh pool for the next
            # chunk; this one fails like any transient error and is retried.
            if self._pool is pool:
                pool.shutdown(wait=False, cancel_futures=True)
                self._pool = self._new_pool()
            raise
        if isinstance(result, tuple):
            raise PermanentError(*result)
        return result

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
