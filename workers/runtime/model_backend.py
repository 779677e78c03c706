"""The two ways a model stage reaches its model, written once for every model stage.

- ``VllmBackend``: an in-process ``vllm.LLM`` on the worker's engine thread, built off the
  event loop (Kafka heartbeats keep going while it loads), fed by a ``MicroBatcher`` that
  batches concurrent requests and tells a poison input from a broken engine (with the
  stage's canary), each request bounded by the stage's request timeout.
- ``OpenAIBackend``: a client of a ``vllm serve`` OpenAI-compatible endpoint (base URL, bearer
  key, the same request timeout); the server batches.

A stage's backend pair subclasses these and says only what differs: the engine's default
kwargs and how to run a batch, the endpoint and how to read its answer. The knobs come from
the stage's ``ModelServing`` view (``workers.settings``), so the caption and embed settings
need no code of their own here.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Sequence
from concurrent.futures import Executor
from typing import Any, ClassVar, Generic, TypeVar

import httpx

from workers.runtime.engine_args import engine_kwargs
from workers.runtime.microbatch import MicroBatcher, engine_thread
from workers.settings import ModelServing

Req = TypeVar("Req")
Res = TypeVar("Res")


class VllmBackend(abc.ABC, Generic[Req, Res]):
    """One in-process ``vllm.LLM``; concurrent requests are batched into one engine call."""

    name = "vllm"

    def __init__(self, serving: ModelServing, canary: Req, executor: Executor | None = None) -> None:
        self.model = serving.served_name
        self.serving = serving
        self._llm: Any = None
        self._owns_executor = executor is None
        self._executor = executor or engine_thread(f"{serving.stage}-engine")
        # Poison inputs never count (the batcher probes the engine after a failure), so trip
        # on max_attempts engine failures: before a record's retries run out on a broken engine.
        self._batcher = MicroBatcher(
            self._run_batch,
            serving.max_batch,
            self._executor,
            max_consecutive_failures=serving.max_attempts,
            canary=canary,
        )

    @abc.abstractmethod
    def engine_defaults(self) -> dict[str, Any]:
        """``vllm.LLM`` kwargs of this stage; ``*_ENGINE_ARGS`` overrides them."""

    @abc.abstractmethod
    def _run_batch(self, batch: Sequence[Req]) -> Sequence[Res]:
        """One blocking engine call for ``batch`` (on the engine thread), a result per request."""

    async def start(self) -> None:
        # Built on the engine thread: keeps the event loop (and Kafka heartbeats) responsive.
        await asyncio.get_running_loop().run_in_executor(self._executor, self._load)

    def _load(self) -> None:
        from vllm import LLM  # heavy import, only where the engine runs

        s = self.serving
        self._llm = LLM(model=s.model, **engine_kwargs(s.engine_args, self.engine_defaults()))

    async def _submit(self, request: Req) -> Res:
        return await asyncio.wait_for(self._batcher.submit(request), self.serving.request_timeout_s)

    async def close(self) -> None:
        await self._batcher.close()
        self._llm = None
        if self._owns_executor:
            self._executor.shutdown(wait=False, cancel_futures=True)


class OpenAIBackend:
    """Client of a ``vllm serve`` OpenAI-compatible endpoint; the server batches for us."""

    name = "openai"
    # At most max_in_flight connections; False keeps httpx's default pool.
    caps_connections: ClassVar[bool] = True

    def __init__(self, serving: ModelServing) -> None:
        self.model = serving.served_name
        self.serving = serving
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        s = self.serving
        pool: dict[str, Any] = {}
        if self.caps_connections:
            pool["limits"] = httpx.Limits(max_connections=s.max_in_flight)
        self._client = httpx.AsyncClient(
            base_url=s.openai_url.rstrip("/") + "/",
            headers={"Authorization": f"Bearer {s.openai_api_key}"},
            timeout=s.request_timeout_s,
            **pool,
        )

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        """POST ``body`` to ``path`` under the base URL; the decoded JSON answer (HTTP errors raise)."""
        assert self._client is not None
        resp = await self._client.post(path, json=body)
        resp.raise_for_status()
        return resp.json()

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
