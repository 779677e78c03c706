"""Embedding backends: in-process vLLM pooling engine, or a ``vllm serve --runner pooling``
endpoint. Documents are embedded without an instruction (Qwen3-Embedding's convention).
Engine thread, continuous batching, HTTP client and timeouts are the shared bases'
(``workers.runtime.model_backend``)."""

from __future__ import annotations

from concurrent.futures import Executor
from typing import Any, Protocol

from workers.runtime.continuous import OnStep
from workers.runtime.model_backend import OpenAIBackend, VllmBackend
from workers.runtime.stage import ModelBackend
from workers.settings import EmbedSettings

CANARY = "A short caption."  # a text a healthy engine always embeds (the batcher's probe)


class EmbedBackend(ModelBackend, Protocol):
    async def embed(self, text: str) -> list[float]: ...


class VllmEmbedBackend(VllmBackend[str, list[float]]):
    def __init__(
        self, settings: EmbedSettings, executor: Executor | None = None, on_step: OnStep | None = None
    ) -> None:
        super().__init__(settings.serving, CANARY, executor, on_step)

    def engine_defaults(self) -> dict[str, Any]:
        return {"runner": "pooling"}

    def _render(self, request: str) -> tuple[Any, Any]:
        # LLM.embed's own rendering (its "embed" IO processor: tokenizer settings, pooling
        # params with task "embed"), for one text; an overlong text raises at add_request.
        from vllm.entrypoints.pooling.typing import OfflineEncodeInputsContext

        io_processor = self._llm.pooling_io_processors["embed"]
        ctx = OfflineEncodeInputsContext(
            pooling_task="embed",
            prompts=[request],
            tokenization_kwargs=None,
            pooling_params=None,
            lora_request=None,
            priorities=None,
        )
        factory, _ = io_processor.get_request_factory_offline(ctx)
        [render_params] = factory()
        rendered = io_processor.render(render_params)
        return rendered["prompts"], rendered["params"]

    def _result(self, output: Any, latency_s: float) -> list[float]:
        from vllm.outputs import EmbeddingRequestOutput

        if output.error is not None:  # a request-level error: this request's, not the engine's
            raise RuntimeError(f"embed request failed: {output.error!r}")
        return [float(x) for x in EmbeddingRequestOutput.from_base(output).outputs.embedding]

    async def embed(self, text: str) -> list[float]:
        return await self._submit(text)


class OpenAIEmbedBackend(OpenAIBackend):
    caps_connections = False  # as it always was: httpx's default pool, not CAPSTREAM_EMBED_MAX_IN_FLIGHT

    def __init__(self, settings: EmbedSettings) -> None:
        super().__init__(settings.serving)

    async def embed(self, text: str) -> list[float]:
        body = await self._post("embeddings", {"model": self.model, "input": [text]})
        return [float(x) for x in body["data"][0]["embedding"]]


def make_embed_backend(
    settings: EmbedSettings,
    engine_executor: Executor | None = None,
    on_step: OnStep | None = None,
) -> EmbedBackend:
    """``on_step`` hears the requests of each in-process engine step (unused by the HTTP client)."""
    if settings.embed_backend == "openai":
        return OpenAIEmbedBackend(settings)
    return VllmEmbedBackend(settings, engine_executor, on_step)
