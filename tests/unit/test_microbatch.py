"""MicroBatcher: concurrent requests become batches; a broken engine stops the worker."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from workers.runtime.errors import FatalWorkerError
from workers.runtime.microbatch import MicroBatcher, engine_thread


async def test_concurrent_requests_share_batches_in_order() -> None:
    batches: list[list[int]] = []

    def double(items: Sequence[int]) -> list[int]:
        batches.append(list(items))
        return [2 * i for i in items]

    batcher = MicroBatcher(double, max_batch=4, executor=engine_thread())
    results = await asyncio.gather(*(batcher.submit(i) for i in range(10)))
    await batcher.close()
    assert results == [2 * i for i in range(10)]
    assert max(len(b) for b in batches) <= 4 and len(batches) < 10


async def test_a_poison_request_fails_alone_and_the_rest_of_its_batch_succeeds() -> None:
    def engine(items: Sequence[int]) -> list[int]:
        if -1 in items:
            raise RuntimeError("poison")
        return [2 * i for i in items]

    batcher = MicroBatcher(engine, max_batch=8, executor=engine_thread())
    results = await asyncio.gather(*(batcher.submit(i) for i in (1, -1, 3, 4)), return_exceptions=True)
    await batcher.close()
    assert results[0] == 2 and results[2:] == [6, 8]
    assert isinstance(results[1], RuntimeError) and not isinstance(results[1], FatalWorkerError)


async def test_a_broken_engine_becomes_fatal_after_consecutive_failures() -> None:
    def broken(items: Sequence[int]) -> list[int]:
        raise RuntimeError("engine exploded")

    batcher = MicroBatcher(broken, max_batch=1, executor=engine_thread(), max_consecutive_failures=3)
    for _ in range(2):
        with pytest.raises(RuntimeError):
            await batcher.submit(1)
    with pytest.raises(FatalWorkerError):
        await batcher.submit(1)
    await batcher.close()
