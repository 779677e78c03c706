"""Caption backends: the in-process vLLM engine and a client of ``vllm serve``.

Both take the same chat messages and return the same ``CaptionResult``; which one runs is
``CAPSTREAM_CAPTION_BACKEND`` (``vllm`` owns a GPU per worker, ``openai`` lets many workers
share one server).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from workers.caption.prompt import ChatMessages, build_canary_messages
from workers.runtime.engine_args import engine_kwargs
from workers.runtime.microbatch import MicroBatcher, engine_thread
from workers.settings import CaptionSettings


@dataclass(frozen=True)
class CaptionResult:
    text: str
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_s: float


class CaptionBackend(Protocol):
    name: str
    model: str

    async def start(self) -> None: ...
    async def caption(self, messages: ChatMessages) -> CaptionResult: ...
    async def close(self) -> None: ...


class VllmCaptionBackend:
    """One in-process ``vllm.LLM``; concurrent segments are batched into one ``chat`` call."""

    name = "vllm"

    def __init__(self, settings: CaptionSettings, executor: Executor | None = None) -> None:
        self.model = settings.caption_model_name or settings.caption_model
        self._settings = settings
        self._llm: Any = None
        self._sampling: Any = None
        self._owns_executor = executor is None
        self._executor = executor or engine_thread("caption-engine")
        # Poison inputs never count (the batcher probes the engine after a failure), so trip
        # on max_attempts engine failures: before a record's retries run out on a broken engine.
        self._batcher = MicroBatcher(
            self._run_batch,
            settings.caption_max_batch,
            self._executor,
            max_consecutive_failures=settings.max_attempts,
            canary=build_canary_messages(settings.caption_prompt),
        )

    async def start(self) -> None:
        # Built on the engine thread: keeps the event loop (and Kafka heartbeats) responsive.
        await asyncio.get_running_loop().run_in_executor(self._executor, self._load)

    def _load(self) -> None:
        from vllm import LLM, SamplingParams  # heavy import, only where the engine runs

        s = self._settings
        self._llm = LLM(
            model=s.caption_model,
            **engine_kwargs(
                s.caption_engine_args,
                {
                    "max_model_len": s.caption_max_model_len,
                    "limit_mm_per_prompt": {"image": s.caption_max_images, "video": 0},
                    "mm_processor_cache_gb": 0,
                },
            ),
        )
        self._sampling = SamplingParams(max_tokens=s.caption_max_tokens, temperature=s.caption_temperature)

    def _run_batch(self, batch: Sequence[ChatMessages]) -> list[CaptionResult]:
        started = time.perf_counter()
        outputs = self._llm.chat(list(batch), self._sampling, use_tqdm=False)
        elapsed = time.perf_counter() - started
        return [
            CaptionResult(
                text=out.outputs[0].text.strip(),
                prompt_tokens=len(out.prompt_token_ids or []),
                completion_tokens=len(out.outputs[0].token_ids),
                latency_s=elapsed,
            )
            for out in outputs
        ]

    async def caption(self, messages: ChatMessages) -> CaptionResult:
        return await asyncio.wait_for(self._batcher.submit(messages), self._settings.caption_request_timeout_s)

    async def close(self) -> None:
        await self._batcher.close()
        self._llm = None
        if self._owns_executor:
            self._executor.shutdown(wait=False, cancel_futures=True)


class OpenAICaptionBackend:
    """Client of a ``vllm serve`` OpenAI-compatible endpoint; the server batches for us."""

    name = "openai"

    def __init__(self, settings: CaptionSettings) -> None:
        self.model = settings.caption_model_name or settings.caption_model
        self._settings = settings
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        s = self._settings
        self._client = httpx.AsyncClient(
            base_url=s.caption_openai_url.rstrip("/") + "/",
            headers={"Authorization": f"Bearer {s.caption_openai_api_key}"},
            timeout=s.caption_request_timeout_s,
            limits=httpx.Limits(max_connections=s.caption_max_in_flight),
        )

    async def caption(self, messages: ChatMessages) -> CaptionResult:
        assert self._client is not None
        s = self._settings
        started = time.perf_counter()
        resp = await self._client.post(
            "chat/completions",
            json={
                "model": self.model,
                "messages": messages,
                "max_tokens": s.caption_max_tokens,
                "temperature": s.caption_temperature,
            },
        )
        resp.raise_for_status()
        body = resp.json()
        usage = body.get("usage") or {}
        return CaptionResult(
            text=(body["choices"][0]["message"]["content"] or "").strip(),
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            latency_s=time.perf_counter() - started,
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()


def make_caption_backend(settings: CaptionSettings, engine_executor: Executor | None = None) -> CaptionBackend:
    if settings.caption_backend == "openai":
        return OpenAICaptionBackend(settings)
    return VllmCaptionBackend(settings, engine_executor)
