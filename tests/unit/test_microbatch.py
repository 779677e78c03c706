"""MicroBatcher: concurrent requests become batches; poison inputs are blamed on themselves, a
broken engine (failing known-good requests too) stops the worker."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

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


def _poison_engine(calls: list[list[int]] | None = None) -> Callable[[Sequence[int]], list[int]]:
    """An engine that works, except on negative inputs (poison)."""

    def engine(items: Sequence[int]) -> list[int]:
        if calls is not None:
            calls.append(list(items))
        if any(i < 0 for i in items):
            raise RuntimeError("poison input")
        return [2 * i for i in items]

    return engine


async def _retried_like_the_loop(batcher: MicroBatcher[int, int], request: int, attempts: int = 3) -> None:
    """What the consumer loop does with a poison record: try it ``attempts`` times, then DLQ."""
    for _ in range(attempts):
        with pytest.raises(RuntimeError) as info:
            await batcher.submit(request)
        assert not isinstance(info.value, FatalWorkerError), "a poison input was taken for a broken engine"


async def test_poison_inputs_never_add_up_to_a_broken_engine() -> None:
    # Issue 8 finding 2: one earlier poison plus three new ones crash-looped the caption worker,
    # because every single-request failure counted toward "engine broken", across records.
    calls: list[list[int]] = []
    batcher = MicroBatcher(_poison_engine(calls), max_batch=4, executor=engine_thread(), max_consecutive_failures=3)
    assert await batcher.submit(1) == 2
    for poison in (-1, -2, -3, -4):
        await _retried_like_the_loop(batcher, poison)
    assert await batcher.submit(5) == 10
    await batcher.close()
    # Each failure of a poison input cost one extra engine call: a probe with the last good request.
    assert calls.count([1]) == 1 + 4 * 3


async def test_poison_at_the_head_of_a_fresh_worker_is_blamed_on_the_input() -> None:
    # Nothing has succeeded yet (a restarted worker meets its poison records first): the
    # caller's canary tells the engine is fine, so the worker does not crash-loop on them.
    batcher = MicroBatcher(
        _poison_engine(), max_batch=4, executor=engine_thread(), max_consecutive_failures=3, canary=0
    )
    for poison in (-1, -2, -3, -4):
        await _retried_like_the_loop(batcher, poison)
    assert await batcher.submit(7) == 14
    await batcher.close()


async def test_poison_in_concurrent_batches_never_adds_up_to_a_broken_engine() -> None:
    batcher = MicroBatcher(_poison_engine(), max_batch=4, executor=engine_thread(), max_consecutive_failures=3)
    assert await batcher.submit(1) == 2
    for _ in range(3):
        results = await asyncio.gather(*(batcher.submit(i) for i in (-1, 2, -2, -3, 3, -4)), return_exceptions=True)
        assert results[1] == 4 and results[4] == 6
        assert all(isinstance(results[i], RuntimeError) for i in (0, 2, 3, 5))
        assert not any(isinstance(r, FatalWorkerError) for r in results)
    await batcher.close()


async def test_an_engine_that_breaks_after_working_becomes_fatal() -> None:
    broken = False

    def engine(items: Sequence[int]) -> list[int]:
        if broken:
            raise RuntimeError("engine exploded")
        return [2 * i for i in items]

    batcher = MicroBatcher(engine, max_batch=1, executor=engine_thread(), max_consecutive_failures=3, canary=0)
    assert await batcher.submit(1) == 2
    broken = True  # the probe (the last good request) now fails too: the engine is at fault
    for _ in range(2):
        with pytest.raises(RuntimeError) as info:
            await batcher.submit(1)
        assert not isinstance(info.value, FatalWorkerError)
    with pytest.raises(FatalWorkerError):
        await batcher.submit(1)
    await batcher.close()


async def test_an_engine_broken_from_the_start_becomes_fatal_despite_a_canary() -> None:
    def broken(items: Sequence[int]) -> list[int]:
        raise RuntimeError("engine exploded")

    batcher = MicroBatcher(broken, max_batch=4, executor=engine_thread(), max_consecutive_failures=3, canary=0)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(5)), return_exceptions=True)
    await batcher.close()
    assert not any(isinstance(r, FatalWorkerError) for r in results[:2])
    assert all(isinstance(r, FatalWorkerError) for r in results[2:])
