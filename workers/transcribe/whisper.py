"""Whisper on vLLM: in-process (``VllmWhisperBackend``) or a ``vllm serve`` endpoint
(``OpenAIWhisperBackend``), the same prompts and the same answer for the same audio.

What vLLM 0.32 does for Whisper, and both backends do the same way:

- Prompt: encoder ``{"prompt": "", "multi_modal_data": {"audio": (samples, 16000)}}``, decoder
  ``<|startoftranscript|><|{lang}|><|transcribe|><|0.00|>``. That is the model class's own
  ``get_generation_prompt`` with ``<|notimestamps|>`` replaced by ``<|0.00|>``, as the server
  does for ``response_format=verbose_json``: the model then writes timestamp tokens, and the
  transcript is read from them as segments (pairs ``<|a|> text <|b|>``, times 0.02 s a step,
  relative to the chunk). As in the server, the text is the segments' texts joined by a space
  (none for no-space languages): tokens not closed by a timestamp are not in it.
- Language: the given ISO 639-1 code; without one, detected first: one decoder step from
  ``<|startoftranscript|>`` constrained to the language tokens (``allowed_token_ids``,
  temperature 0), as the server's ``_detect_language``. So a chunk without a language costs
  two requests. The detected code is returned.
- Word timestamps: vLLM 0.32's server accepts ``timestamp_granularities[]=word`` but never
  fills ``words``; neither backend returns words.
- Greedy decoding (temperature 0), at most ``CAPSTREAM_TRANSCRIBE_MAX_TOKENS`` tokens (and the
  model's 448 decoder positions), over the model's generation-config defaults, as the server
  applies them.

The FLAC is decoded here with PyAV (``decode_speech``): bytes that are not audio fail with
PermanentError("invalid_audio") on both backends, before anything reaches the engine or server
(the server itself answers 400, not told from other bad requests). The server is sent the
decoded samples as a 32-bit float WAV, not the FLAC: vLLM 0.32's PyAV audio loader (the one
that runs without torchcodec and soundfile, as on these CPU machines) returns a 16-bit file
at the model's rate unscaled (samples up to 32767 instead of 1.0), so Whisper would hear
another signal than in process; a float WAV reads the same with every loader.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from schemas.speech import SPEECH_SAMPLE_RATE
from workers.runtime.continuous import OnStep
from workers.runtime.model_backend import OpenAIBackend, VllmBackend
from workers.settings import TranscribeSettings
from workers.transcribe.recognition import Recognized, RelativeText, decode_speech

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

TIME_STEP_S = 0.02  # one Whisper timestamp token
NO_SPACE_LANGUAGES = frozenset({"zh", "ja", "th", "lo", "my", "yue"})  # vLLM's Whisper: no space between parts


@dataclass(frozen=True)
class WhisperRequest:
    """One engine request: transcribe ``audio`` in ``language``, or (``language`` None) detect it."""

    audio: npt.NDArray[np.float32]
    language: str | None


@dataclass(frozen=True)
class WhisperOutput:
    token_ids: tuple[int, ...]
    language: str | None  # the detected language (detection requests)
    latency_s: float


def timestamp_segments(
    token_ids: Sequence[int], timestamp_begin: int, eos_id: int | None, decode: Callable[[list[int]], str]
) -> list[RelativeText]:
    """The segments of a transcript written with timestamp tokens, read as vLLM 0.32's server
    reads them (``SpeechToTextBaseServing._get_verbose_segments``): a segment is closed by two
    timestamp tokens in a row (or a final one); its times are its first and last timestamp
    tokens', its text the tokens between them."""
    tokens = tuple(token_ids)
    if tokens and tokens[-1] == eos_id:
        tokens = tokens[:-1]
    if not tokens:
        return []
    with_start = (timestamp_begin, *tokens)
    if with_start[-2] < timestamp_begin <= with_start[-1]:
        with_start = (*with_start, with_start[-1])
    segments: list[RelativeText] = []
    last = 0
    for idx in range(1, len(with_start)):
        if with_start[idx] >= timestamp_begin and with_start[idx - 1] >= timestamp_begin:
            piece = with_start[last:idx]
            segments.append(
                RelativeText(
                    start_s=TIME_STEP_S * (piece[0] - timestamp_begin),
                    end_s=TIME_STEP_S * (piece[-1] - timestamp_begin),
                    text=decode(list(piece[1:-1])),
                )
            )
            last = idx
    return segments


def float_wav(samples: npt.NDArray[np.float32], sample_rate: int = SPEECH_SAMPLE_RATE) -> bytes:
    """A mono 32-bit IEEE float WAV of ``samples`` (see the module docstring for why)."""
    data = samples.astype("<f4", copy=False).tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, sample_rate, sample_rate * 4, 4, 32)  # 3: WAVE_FORMAT_IEEE_FLOAT
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


def recognized(segments: Sequence[RelativeText], language: str | None, latency_s: float) -> Recognized:
    """The result of a chunk's segments, either backend: the text joined as the server joins it
    (a space between segments, none for no-space languages), segments without words dropped."""
    separator = "" if language in NO_SPACE_LANGUAGES else " "
    return Recognized(
        text=separator.join(s.text for s in segments).strip(),
        language=language,
        latency_s=latency_s,
        segments=[s for s in segments if s.text.strip()],
    )


class VllmWhisperBackend(VllmBackend[WhisperRequest, WhisperOutput]):
    """Whisper in-process, its requests in the continuous batch of the engine thread."""

    def __init__(
        self, settings: TranscribeSettings, executor: Executor | None = None, on_step: OnStep | None = None
    ) -> None:
        import numpy as np

        canary = WhisperRequest(np.zeros(SPEECH_SAMPLE_RATE, dtype=np.float32), "en")
        super().__init__(settings.serving, canary, executor, on_step)
        self._settings = settings
        self._model_cls: Any = None
        self._stt_config: Any = None
        self._tokenizer: Any = None
        self._sampling: Any = None
        self._detect_sampling: Any = None
        self._timestamp_begin = 0
        self._detecting: dict[str, bool] = {}  # request id -> a language detection

    def engine_defaults(self) -> dict[str, Any]:
        return {"limit_mm_per_prompt": {"audio": 1}, "mm_processor_cache_gb": 0}

    def _load(self) -> None:
        super()._load()
        from vllm import SamplingParams
        from vllm.model_executor.model_loader import get_model_cls
        from vllm.sampling_params import RequestOutputKind

        llm = self._llm
        model_config = llm.model_config
        self._model_cls = get_model_cls(model_config)
        self._stt_config = self._model_cls.get_speech_to_text_config(model_config, "transcribe")
        self._tokenizer = llm.get_tokenizer()
        self._timestamp_begin = self._tokenizer.convert_tokens_to_ids("<|0.00|>")
        defaults = model_config.get_diff_sampling_param()  # the server's default_sampling_params
        max_tokens = min(
            self._settings.transcribe_max_tokens, model_config.max_model_len, defaults.pop("max_tokens", 1 << 30)
        )
        self._sampling = SamplingParams.from_optional(
            **{**defaults, "temperature": 0.0, "max_tokens": max_tokens, "output_kind": RequestOutputKind.FINAL_ONLY}
        )
        self._detect_sampling = SamplingParams(
            max_tokens=1,
            temperature=0.0,
            allowed_token_ids=self._model_cls.get_language_token_ids(self._tokenizer),
            output_kind=RequestOutputKind.FINAL_ONLY,
        )

    def add(self, request_id: str, request: WhisperRequest) -> None:
        super().add(request_id, request)
        self._detecting[request_id] = request.language is None

    def abort(self, request_ids: Sequence[str]) -> None:
        for request_id in request_ids:
            self._detecting.pop(request_id, None)
        super().abort(request_ids)

    def _render(self, request: WhisperRequest) -> tuple[Any, Any]:
        if request.language is None:
            prompt = self._model_cls.get_language_detection_prompt(request.audio, self._stt_config)
            return self._llm._preprocess_cmpl_one(prompt), self._detect_sampling
        from vllm.config.speech_to_text import SpeechToTextParams

        params = SpeechToTextParams(
            audio=request.audio,
            stt_config=self._stt_config,
            model_config=self._llm.model_config,
            language=self._model_cls.validate_language(request.language),
            task_type="transcribe",
            request_prompt="",
        )
        prompt = self._model_cls.get_generation_prompt(params)
        decoder = prompt["decoder_prompt"]
        decoder["prompt"] = decoder["prompt"].replace("<|notimestamps|>", "<|0.00|>")  # timestamps, as verbose_json
        return self._llm._preprocess_cmpl_one(prompt), self._sampling

    def _result(self, output: Any, latency_s: float) -> WhisperOutput:
        detecting = self._detecting.pop(output.request_id, False)
        completion = output.outputs[0]
        if completion.finish_reason in ("abort", "error"):
            raise RuntimeError(f"transcribe request ended with {completion.finish_reason!r}")
        token_ids = tuple(completion.token_ids)
        language = (
            self._model_cls.parse_language_detection_output(list(token_ids), self._tokenizer) if detecting else None
        )
        return WhisperOutput(token_ids, language, latency_s)

    async def transcribe(self, flac: bytes, language: str | None) -> Recognized:
        audio = await asyncio.to_thread(decode_speech, flac)  # PermanentError(INVALID_AUDIO) for non-audio
        latency_s = 0.0
        if language is None:
            detected = await self._submit(WhisperRequest(audio, None))
            language, latency_s = detected.language, detected.latency_s
        out = await self._submit(WhisperRequest(audio, language))
        segments = timestamp_segments(
            out.token_ids, self._timestamp_begin, self._tokenizer.eos_token_id, self._tokenizer.decode
        )
        return recognized(segments, language, latency_s + out.latency_s)


class OpenAIWhisperBackend(OpenAIBackend):
    """Client of ``vllm serve``'s ``/v1/audio/transcriptions`` (multipart, ``verbose_json``)."""

    def __init__(self, settings: TranscribeSettings) -> None:
        super().__init__(settings.serving)
        self._settings = settings

    async def transcribe(self, flac: bytes, language: str | None) -> Recognized:
        assert self._client is not None, "OpenAIWhisperBackend.start() was not awaited"
        audio = await asyncio.to_thread(decode_speech, flac)  # not audio: PermanentError, as in process
        started = time.perf_counter()
        form: dict[str, str] = {
            "model": self.model,
            "response_format": "verbose_json",
            "timestamp_granularities[]": "segment",
            "temperature": "0",
            "max_completion_tokens": str(self._settings.transcribe_max_tokens),
        }
        if language is not None:
            form["language"] = language
        resp = await self._client.post(
            "audio/transcriptions", data=form, files={"file": ("chunk.wav", float_wav(audio), "audio/wav")}
        )
        resp.raise_for_status()
        body = resp.json()
        segments = [
            RelativeText(start_s=float(s["start"]), end_s=float(s["end"]), text=s["text"])
            for s in body.get("segments") or ()
        ]
        answer = recognized(segments, body.get("language") or language, time.perf_counter() - started)
        if answer.text != (body.get("text") or "").strip():  # the server's own join, as a check
            raise RuntimeError(f"the server's text {body.get('text')!r} is not its segments' {answer.text!r}")
        return answer


def vllm_serve_whisper_args() -> list[str]:
    """The ``vllm serve`` arguments of a Whisper server for these requests: one audio per prompt,
    no multimodal cache (every chunk is new audio)."""
    return ["--limit-mm-per-prompt", '{"audio": 1}', "--mm-processor-cache-gb", "0"]
