"""Embedding backends: in-process vLLM pooling engine, or a ``vllm serve --runner pooling``
endpoint. Documents are embedded without an instruction (Qwen3-Embedding's convention)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import Executor
from typing import Any, Protocol

import httpx

from workers.runtime.engine_args import engine_kwargs
from workers.runtime.microbatch import MicroBatcher, engine_thread
from workers.settings import EmbedSettings


class EmbedBackend(Protocol):
    name: str
    model: str

    async def start(self) -> None: ...
    async def embed(self, text: str) -> list[float]: ...
    async def close(self) -> None: ...


class VllmEmbedBackend:
    name = "vllm"

    def __init__(self, settings: EmbedSettings, executor: Executor | None = None) -> None:
        self.model = settings.embed_model_name or settings.embed_model
        self._settings = settings
        self._llm: Any = None
        self._owns_executor = executor is None
        self._executor = executor or engine_thread("embed-engine")
        # Poison inputs never count (the batcher probes the engine after a failure), so trip
        # on max_attempts engine failures: before a record's retries run out on a broken engine.
        self._batcher = MicroBatcher(
            self._run_batch,
            settings.embed_max_batch,
            self._executor,
            max_consecutive_failures=settings.max_attempts,
            canary="A short caption.",
        )

    async def start(self) -> None:
        # Built on the engine thread: keeps the event loop (and Kafka heartbeats) responsive.
        await asyncio.get_running_loop().run_in_executor(self._executor, self._load)

    def _load(self) -> None:
        from vllm import LLM  # heavy import, only where the engine runs

        self._llm = LLM(
            model=self._settings.embed_model, **engine_kwargs(self._settings.embed_engine_args, {"runner": "pooling"})
        )

    def _run_batch(self, texts: Sequence[str]) -> list[list[float]]:
        outputs = self._llm.embed(list(texts), use_tqdm=False)
        return [list(map(float, out.outputs.embedding)) for out in outputs]

    async def embed(self, text: str) -> list[float]:
        return await asyncio.wait_for(self._batcher.submit(text), self._settings.embed_request_timeout_s)

    async def close(self) -> None:
        await self._batcher.close()
        self._llm = None
        if self._owns_executor:
            self._executor.shutdown(wait=False, cancel_futures=True)


class OpenAIEmbedBackend:
    name = "openai"

    def __init__(self, settings: EmbedSettings) -> None:
        self.model = settings.embed_model_name or settings.embed_model
        self._settings = settings
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        s = self._settings
        self._client = httpx.AsyncClient(
            base_url=s.embed_openai_url.rstrip("/") + "/",
            headers={"Authorization": f"Bearer {s.embed_openai_api_key}"},
            timeout=s.embed_request_timeout_s,
        )

    async def embed(self, text: str) -> list[float]:
        assert self._client is not None
        resp = await self._client.post("embeddings", json={"model": self.model, "input": [text]})
        resp.raise_for_status()
        return [float(x) for x in resp.json()["data"][0]["embedding"]]

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()


def make_embed_backend(settings: EmbedSettings, engine_executor: Executor | None = None) -> EmbedBackend:
    if settings.embed_backend == "openai":
        return OpenAIEmbedBackend(settings)
    return VllmEmbedBackend(settings, engine_executor)
