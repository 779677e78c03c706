"""Turn concurrent single requests into batched calls of a blocking engine.

vLLM's offline ``LLM`` batches continuously *within* a call; handing it every request that is
waiting keeps its batch full. Engine calls run on an engine thread, never on the event loop.
vLLM keeps per-process global state (forward context, parallel groups), so two engines in one
process must share ONE engine thread: callers pass the same single-thread executor to both.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Generic, TypeVar

from workers.runtime.errors import FatalWorkerError

Req = TypeVar("Req")
Res = TypeVar("Res")


def engine_thread(name: str = "vllm-engine") -> ThreadPoolExecutor:
    """The executor every in-process engine of a worker process runs on."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)


class MicroBatcher(Generic[Req, Res]):
    """Batches requests for a blocking engine, and tells a bad input from a broken engine.

    A failed batch of several requests is re-run one request at a time, so a poison input
    fails alone and the others get their results. A request that fails alone is either the
    input's fault or the engine's, and only the engine can say which: the batcher re-runs a
    known-good request alone (the probe), namely the last request that succeeded on this
    engine or, before any has, the caller's ``canary`` (a tiny input a healthy engine always
    completes). The probe costs one engine call, and only after a failure.

    - Probe succeeds: the engine works, the input is at fault. The request gets its own error
      (the loop retries it, then dead-letters it) and the engine-failure count resets, so no
      number of poison inputs, in any order, adds up to "engine broken".
    - Probe fails, or there is no probe (nothing succeeded yet and no canary): an engine
      failure. ``max_consecutive_failures`` of them with no success between mean the engine is
      broken: the request gets FatalWorkerError (so does each further failure until a success),
      the worker stops without committing, and its supervisor restarts it with a fresh engine
      while the uncommitted records wait in Kafka. Counting when there is no probe keeps an
      engine that is broken from the start from dead-lettering every record; the canary keeps
      poison at the head of a restarted worker's partitions from looking like that.
    """

    def __init__(
        self,
        run_batch: Callable[[Sequence[Req]], Sequence[Res]],
        max_batch: int,
        executor: Executor,
        max_consecutive_failures: int = 3,
        canary: Req | None = None,
    ) -> None:
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._executor = executor
        self._max_consecutive_failures = max_consecutive_failures
        self._engine_failures = 0
        self._canary = canary
        # Proven on this engine, so a probe with it can only fail if the engine does.
        self._known_good: tuple[Req] | None = None
        self._queue: asyncio.Queue[tuple[Req, asyncio.Future[Res]]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None

    async def submit(self, request: Req) -> Res:
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._serve())
        fut: asyncio.Future[Res] = asyncio.get_running_loop().create_future()
        await self._queue.put((request, fut))
        return await fut

    async def _serve(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            live = [(req, fut) for req, fut in batch if not fut.cancelled()]
            if len(live) == 1:
                await self._run_one(*live[0])
            elif live:
                try:
                    results = await self._run([req for req, _ in live])
                except Exception:
                    for req, fut in live:  # isolate the request that breaks the batch
                        await self._run_one(req, fut)
                    continue
                self._succeeded(live[-1][0])
                for (_, fut), res in zip(live, results, strict=True):
                    if not fut.done():
                        fut.set_result(res)

    async def _run(self, requests: list[Req]) -> Sequence[Res]:
        results = await asyncio.get_running_loop().run_in_executor(self._executor, self._run_batch, requests)
        if len(results) != len(requests):
            raise RuntimeError(f"engine returned {len(results)} results for {len(requests)} requests")
        return results

    async def _run_one(self, request: Req, fut: asyncio.Future[Res]) -> None:
        try:
            [result] = await self._run([request])
        except Exception as exc:
            error: Exception = exc
            if await self._engine_works():
                self._engine_failures = 0  # the input's fault: retried and dead-lettered by the loop
            else:
                self._engine_failures += 1
                if self._engine_failures >= self._max_consecutive_failures:
                    error = FatalWorkerError(
                        f"engine failed {self._engine_failures} requests in a row and no known-good one between: "
                        f"{exc!r}"
                    )
            if not fut.done():
                fut.set_exception(error)
            return
        self._succeeded(request)
        if not fut.done():
            fut.set_result(result)

    def _succeeded(self, request: Req) -> None:
        self._engine_failures = 0
        self._known_good = (request,)

    async def _engine_works(self) -> bool:
        """Run the probe alone; False when it fails or there is none (see the class docstring)."""
        if self._known_good is not None:
            probe = self._known_good[0]
        elif self._canary is not None:
            probe = self._canary
        else:
            return False
        try:
            await self._run([probe])
        except Exception:
            return False
        self._known_good = (probe,)
        return True

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
