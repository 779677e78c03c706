"""The two ways a model stage reaches its model, written once for every model stage.

- ``VllmBackend``: an in-process ``vllm.LLM`` on the worker's engine thread, built off the
  event loop (Kafka heartbeats keep going while it loads), stepped by a ``ContinuousBatcher``
  (``workers.runtime.continuous``): each request is rendered and added to the engine when it
  arrives and resolved at the step it finishes, a poison input is told from a broken engine
  (with the stage's canary), and each request is bounded by the stage's request timeout (a
  request timed out is aborted in the engine).
- ``OpenAIBackend``: a client of a ``vllm serve`` OpenAI-compatible endpoint (base URL, bearer
  key, the same request timeout); the server batches.

A stage's backend pair subclasses these and says only what differs: the engine's default
kwargs, how to render a request into an engine input and read a finished output, the
endpoint and how to read its answer. The knobs come from the stage's ``ModelServing`` view
(``workers.settings``), so the caption and embed settings need no code of their own here.
"""

from __future__ import annotations

import abc
import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import Executor
from typing import Any, ClassVar, Generic, TypeVar

import httpx

from workers.runtime.continuous import ContinuousBatcher, OnStep, engine_thread
from workers.runtime.engine_args import engine_kwargs
from workers.settings import ModelServing

Req = TypeVar("Req")
Res = TypeVar("Res")


class VllmBackend(abc.ABC, Generic[Req, Res]):
    """One in-process ``vllm.LLM``, fed continuously: a ``SteppedEngine`` for the batcher.

    ``add``/``step``/``abort`` go to ``LLM.llm_engine`` with our own request ids (the ids
    ``LLM.enqueue_chat`` returns are internal ones, which ``abort_request`` does not take),
    after rendering each request the way ``LLM.chat``/``LLM.embed`` render theirs.
    ``on_step`` (e.g. ``StageMetrics.engine_batch.observe``) gets the requests of each step.
    """

    name = "vllm"

    def __init__(
        self,
        serving: ModelServing,
        canary: Req,
        executor: Executor | None = None,
        on_step: OnStep | None = None,
    ) -> None:
        self.model = serving.served_name
        self.serving = serving
        self._llm: Any = None
        self._added_at: dict[str, float] = {}  # request id -> when it entered the engine
        self._owns_executor = executor is None
        self._executor = executor or engine_thread(f"{serving.stage}-engine")
        # Poison inputs never count (the batcher probes the engine after a failure), so trip
        # on max_attempts engine failures: before a record's retries run out on a broken engine.
        self._batcher = ContinuousBatcher(
            self,
            self._executor,
            max_running=serving.max_batch,
            max_consecutive_failures=serving.max_attempts,
            canary=canary,
            on_step=on_step,
        )

    @abc.abstractmethod
    def engine_defaults(self) -> dict[str, Any]:
        """``vllm.LLM`` kwargs of this stage; ``*_ENGINE_ARGS`` overrides them."""

    @abc.abstractmethod
    def _render(self, request: Req) -> tuple[Any, Any]:
        """The engine input and its sampling/pooling params, as ``LLM.chat``/``LLM.embed``
        would make them (on the engine thread; raises for an input it cannot render)."""

    @abc.abstractmethod
    def _result(self, output: Any, latency_s: float) -> Res:
        """The result of a finished ``RequestOutput``/``PoolingRequestOutput``; ``latency_s``
        is its time in the engine."""

    async def start(self) -> None:
        # Built on the engine thread: keeps the event loop (and Kafka heartbeats) responsive.
        await asyncio.get_running_loop().run_in_executor(self._executor, self._load)

    def _load(self) -> None:
        from vllm import LLM  # heavy import, only where the engine runs

        s = self.serving
        self._llm = LLM(model=s.model, **engine_kwargs(s.engine_args, self.engine_defaults()))

    def add(self, request_id: str, request: Req) -> None:
        prompt, params = self._render(request)
        self._llm.llm_engine.add_request(request_id, prompt, params)
        self._added_at[request_id] = time.perf_counter()

    def step(self) -> list[tuple[str, Res | Exception]]:
        finished: list[tuple[str, Res | Exception]] = []
        for output in self._llm.llm_engine.step():
            if not output.finished:
                continue
            started = self._added_at.pop(output.request_id, None)
            latency_s = time.perf_counter() - started if started is not None else 0.0
            try:
                finished.append((output.request_id, self._result(output, latency_s)))
            except Exception as exc:  # an output it cannot read: that request's own failure
                finished.append((output.request_id, exc))
        return finished

    def abort(self, request_ids: Sequence[str]) -> None:
        for request_id in request_ids:
            self._added_at.pop(request_id, None)
        self._llm.llm_engine.abort_request(list(request_ids))

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
            headers={"Authorization": f"Bearer {s.openai_api_key.get_secret_value()}"},
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
