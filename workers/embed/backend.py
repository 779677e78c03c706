"""Embedding backends: in-process vLLM pooling engine, or a ``vllm serve --runner pooling``
endpoint. Documents are embedded without an instruction (Qwen3-Embedding's convention).
Engine thread, batching, HTTP client and timeouts are the shared bases'
(``workers.runtime.model_backend``)."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor
from typing import Any, Protocol

from workers.runtime.model_backend import OpenAIBackend, VllmBackend
from workers.runtime.stage import ModelBackend
from workers.settings import EmbedSettings

CANARY = "A short caption."  # a text a healthy engine always embeds (the batcher's probe)


class EmbedBackend(ModelBackend, Protocol):
    async def embed(self, text: str) -> list[float]: ...


class VllmEmbedBackend(VllmBackend[str, list[float]]):
    def __init__(self, settings: EmbedSettings, executor: Executor | None = None) -> None:
        super().__init__(settings.serving, CANARY, executor)

    def engine_defaults(self) -> dict[str, Any]:
        return {"runner": "pooling"}

    def _run_batch(self, texts: Sequence[str]) -> list[list[float]]:
        outputs = self._llm.embed(list(texts), use_tqdm=False)
        return [list(map(float, out.outputs.embedding)) for out in outputs]

    async def embed(self, text: str) -> list[float]:
        return await self._submit(text)


class OpenAIEmbedBackend(OpenAIBackend):
    caps_connections = False  # as it always was: httpx's default pool, not CAPSTREAM_EMBED_MAX_IN_FLIGHT

    def __init__(self, settings: EmbedSettings) -> None:
        super().__init__(settings.serving)

    async def embed(self, text: str) -> list[float]:
        body = await self._post("embeddings", {"model": self.model, "input": [text]})
        return [float(x) for x in body["data"][0]["embedding"]]


def make_embed_backend(settings: EmbedSettings, engine_executor: Executor | None = None) -> EmbedBackend:
    if settings.embed_backend == "openai":
        return OpenAIEmbedBackend(settings)
    return VllmEmbedBackend(settings, engine_executor)
