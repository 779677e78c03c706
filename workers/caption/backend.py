"""Caption backends: the in-process vLLM engine and a client of ``vllm serve``.

Both take the same chat messages and return the same ``CaptionResult``; which one runs is
``CAPSTREAM_CAPTION_BACKEND`` (``vllm`` owns a GPU per worker, ``openai`` lets many workers
share one server). Engine thread, continuous batching, HTTP client and timeouts are the shared bases'
(``workers.runtime.model_backend``); here is only what captioning adds.
"""

from __future__ import annotations

import time
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Protocol

from workers.caption.prompt import ChatMessages, build_canary_messages
from workers.runtime.continuous import OnStep
from workers.runtime.model_backend import OpenAIBackend, VllmBackend
from workers.runtime.stage import ModelBackend
from workers.settings import CaptionSettings


@dataclass(frozen=True)
class CaptionResult:
    text: str
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_s: float


class CaptionBackend(ModelBackend, Protocol):
    async def caption(self, messages: ChatMessages) -> CaptionResult: ...


class VllmCaptionBackend(VllmBackend[ChatMessages, CaptionResult]):
    def __init__(
        self, settings: CaptionSettings, executor: Executor | None = None, on_step: OnStep | None = None
    ) -> None:
        super().__init__(settings.serving, build_canary_messages(settings.caption_prompt), executor, on_step)
        self._settings = settings
        self._sampling: Any = None

    def engine_defaults(self) -> dict[str, Any]:
        s = self._settings
        return {
            "max_model_len": s.caption_max_model_len,
            "limit_mm_per_prompt": {"image": s.caption_max_images, "video": 0},
            "mm_processor_cache_gb": 0,
        }

    def _load(self) -> None:
        super()._load()
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        self._sampling = SamplingParams(
            max_tokens=self._settings.caption_max_tokens,
            temperature=self._settings.caption_temperature,
            output_kind=RequestOutputKind.FINAL_ONLY,  # as LLM.chat asks: one output, when finished
        )

    def _render(self, request: ChatMessages) -> tuple[Any, Any]:
        # LLM.chat's own rendering: chat template, images fetched from their data URLs and
        # processed; a bad image raises here, for this request alone.
        return self._llm._preprocess_chat_one(request), self._sampling

    def _result(self, output: Any, latency_s: float) -> CaptionResult:
        completion = output.outputs[0]
        if completion.finish_reason in ("abort", "error"):
            raise RuntimeError(f"caption request ended with {completion.finish_reason!r}")
        return CaptionResult(
            text=completion.text.strip(),
            prompt_tokens=len(output.prompt_token_ids or []),
            completion_tokens=len(completion.token_ids),
            latency_s=latency_s,
        )

    async def caption(self, messages: ChatMessages) -> CaptionResult:
        return await self._submit(messages)


class OpenAICaptionBackend(OpenAIBackend):
    def __init__(self, settings: CaptionSettings) -> None:
        super().__init__(settings.serving)
        self._settings = settings

    async def caption(self, messages: ChatMessages) -> CaptionResult:
        s = self._settings
        started = time.perf_counter()
        body = await self._post(
            "chat/completions",
            {
                "model": self.model,
                "messages": messages,
                "max_tokens": s.caption_max_tokens,
                "temperature": s.caption_temperature,
            },
        )
        usage = body.get("usage") or {}
        return CaptionResult(
            text=(body["choices"][0]["message"]["content"] or "").strip(),
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            latency_s=time.perf_counter() - started,
        )


def make_caption_backend(
    settings: CaptionSettings,
    engine_executor: Executor | None = None,
    on_step: OnStep | None = None,
) -> CaptionBackend:
    """``on_step`` hears the requests of each in-process engine step (unused by the HTTP client)."""
    if settings.caption_backend == "openai":
        return OpenAICaptionBackend(settings)
    return VllmCaptionBackend(settings, engine_executor, on_step)
