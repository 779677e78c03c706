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
    """Batches requests for a blocking engine.

    A failed batch of several requests is re-run one request at a time, so a poison input
    fails alone (the loop retries it, then dead-letters it) and the others get their results.
    Only ``max_consecutive_failures`` single-request failures in a row, more than one poison
    input's retries can cause, mean the engine itself is broken: every caller then gets
    FatalWorkerError, the worker stops without committing, and its supervisor restarts it with
    a fresh engine while the uncommitted segments wait in Kafka.
    """

    def __init__(
        self,
        run_batch: Callable[[Sequence[Req]], Sequence[Res]],
        max_batch: int,
        executor: Executor,
        max_consecutive_failures: int = 7,
    ) -> None:
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._executor = executor
        self._max_consecutive_failures = max_consecutive_failures
        self._consecutive_failures = 0
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
                self._consecutive_failures = 0
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
            self._consecutive_failures += 1
            error: Exception = exc
            if self._consecutive_failures >= self._max_consecutive_failures:
                error = FatalWorkerError(f"engine failed {self._consecutive_failures} requests in a row: {exc!r}")
            if not fut.done():
                fut.set_exception(error)
            return
        self._consecutive_failures = 0
        if not fut.done():
            fut.set_result(result)

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
