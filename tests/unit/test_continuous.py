"""ContinuousBatcher on a fake stepped engine: requests join the running batch and leave at
their own step; poison inputs are blamed on themselves, a broken engine (failing known-good
requests too) stops the worker; a request whose caller gave up is aborted in the engine."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Literal

import pytest

from tests.poison_harness import fails_as_the_inputs_fault
from workers.runtime.continuous import ContinuousBatcher, engine_thread
from workers.runtime.errors import FatalWorkerError

ATTEMPTS = 3  # what the consumer loop gives a record before dead-lettering it


class FakeEngine:
    """Request ``n`` doubles to ``2n`` after ``steps(n)`` steps. Negative requests are poison:
    refused at ``add`` (like an image the engine cannot decode) or, with ``poison_in="step"``,
    failing every step they are in (culprit unknown). ``broken`` fails everything."""

    def __init__(
        self,
        steps: Callable[[int], int] = lambda n: 1,
        poison_in: Literal["add", "step"] = "add",
        step_s: float = 0.0,
    ) -> None:
        self.steps = steps
        self.poison_in = poison_in
        self.step_s = step_s
        self.broken = False
        self.running: dict[str, list[int]] = {}  # id -> [request, steps left]
        self.added: list[int] = []
        self.aborted: list[str] = []
        self.step_sizes: list[int] = []

    def add(self, request_id: str, request: int) -> None:
        self.added.append(request)
        if self.broken or (request < 0 and self.poison_in == "add"):
            raise RuntimeError("poison input" if not self.broken else "engine exploded")
        self.running[request_id] = [request, self.steps(request)]

    def step(self) -> Sequence[tuple[str, int | Exception]]:
        time.sleep(self.step_s)
        if self.broken:
            raise RuntimeError("engine exploded")
        if any(n < 0 for n, _ in self.running.values()):
            raise RuntimeError("poison in the step")
        self.step_sizes.append(len(self.running))
        finished: list[tuple[str, int | Exception]] = []
        for rid, state in list(self.running.items()):
            state[1] -= 1
            if state[1] <= 0:
                del self.running[rid]
                finished.append((rid, 2 * state[0]))
        return finished

    def abort(self, request_ids: Sequence[str]) -> None:
        for rid in request_ids:
            self.running.pop(rid, None)
        self.aborted.extend(request_ids)


def _batcher(
    engine: FakeEngine,
    max_running: int = 8,
    canary: int | None = None,
    on_step: Callable[[int], None] | None = None,
) -> ContinuousBatcher[int, int]:
    return ContinuousBatcher(
        engine, engine_thread(), max_running=max_running, max_consecutive_failures=3, canary=canary, on_step=on_step
    )


async def test_a_short_request_joins_a_running_one_and_finishes_first() -> None:
    engine = FakeEngine(steps=lambda n: n, step_s=0.002)
    stepping = asyncio.Event()
    batcher = _batcher(engine, on_step=lambda n: stepping.set())
    long = asyncio.create_task(batcher.submit(400))  # 400 steps, about a second
    await asyncio.wait_for(stepping.wait(), 10)
    assert await asyncio.gather(batcher.submit(3), batcher.submit(5)) == [6, 10]
    assert not long.done(), "the short requests waited for the long one"
    assert await long == 800
    await batcher.close()
    assert max(engine.step_sizes) == 3  # they ran in the same steps as the long one


async def test_concurrent_requests_share_steps_in_order_and_the_cap_holds() -> None:
    engine = FakeEngine(steps=lambda n: 1 + n % 3)
    sizes: list[int] = []
    batcher = _batcher(engine, max_running=4, on_step=sizes.append)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(10)))
    await batcher.close()
    assert results == [2 * i for i in range(10)]
    assert max(engine.step_sizes) == 4 and len(engine.step_sizes) < 10
    assert sizes == engine.step_sizes  # the metrics hook hears every step's size


async def test_a_poison_request_fails_alone_and_the_others_succeed() -> None:
    batcher = _batcher(FakeEngine(poison_in="add"))
    results = await asyncio.gather(*(batcher.submit(i) for i in (1, -1, 3, 4)), return_exceptions=True)
    await batcher.close()
    assert results[0] == 2 and results[2:] == [6, 8]
    assert isinstance(results[1], RuntimeError) and not isinstance(results[1], FatalWorkerError)


async def test_a_failed_step_reruns_its_requests_one_at_a_time() -> None:
    engine = FakeEngine(poison_in="step")
    batcher = _batcher(engine)
    results = await asyncio.gather(*(batcher.submit(i) for i in (1, -1, 3, 4)), return_exceptions=True)
    await batcher.close()
    assert results[0] == 2 and results[2:] == [6, 8]
    assert isinstance(results[1], RuntimeError) and not isinstance(results[1], FatalWorkerError)
    assert engine.added[:4] == [1, -1, 3, 4] and engine.added[4:7] == [1, -1, 3]  # then alone, in order
    assert engine.step_sizes[:3] == [1, 1, 1]  # each suspect stepped with nothing else in the engine


async def test_a_broken_engine_becomes_fatal_after_consecutive_failures() -> None:
    engine = FakeEngine()
    engine.broken = True
    batcher = _batcher(engine, max_running=1)
    for _ in range(2):
        with pytest.raises(RuntimeError):
            await batcher.submit(1)
    with pytest.raises(FatalWorkerError):
        await batcher.submit(1)
    await batcher.close()


@pytest.mark.parametrize("poison_in", ["add", "step"])
async def test_poison_inputs_never_add_up_to_a_broken_engine(poison_in: Literal["add", "step"]) -> None:
    # Issue 8 finding 2: one earlier poison plus three new ones crash-looped the caption worker,
    # because every single-request failure counted toward "engine broken", across records.
    engine = FakeEngine(poison_in=poison_in)
    batcher = _batcher(engine, max_running=4)
    assert await batcher.submit(1) == 2
    for poison in (-1, -2, -3, -4):
        await fails_as_the_inputs_fault(batcher.submit, poison, ATTEMPTS, RuntimeError)
    assert await batcher.submit(5) == 10
    await batcher.close()
    # Each failure of a poison input cost one extra request: a probe with the last good one.
    assert engine.added.count(1) == 1 + 4 * ATTEMPTS


async def test_poison_at_the_head_of_a_fresh_worker_is_blamed_on_the_input() -> None:
    # Nothing has succeeded yet (a restarted worker meets its poison records first): the
    # caller's canary tells the engine is fine, so the worker does not crash-loop on them.
    engine = FakeEngine()
    batcher = _batcher(engine, max_running=4, canary=0)
    for poison in (-1, -2, -3, -4):
        await fails_as_the_inputs_fault(batcher.submit, poison, ATTEMPTS, RuntimeError)
    assert await batcher.submit(7) == 14
    await batcher.close()
    assert engine.added.count(0) == 4 * ATTEMPTS


@pytest.mark.parametrize("poison_in", ["add", "step"])
async def test_poison_among_concurrent_requests_never_adds_up_to_a_broken_engine(
    poison_in: Literal["add", "step"],
) -> None:
    engine = FakeEngine(poison_in=poison_in)
    batcher = _batcher(engine, max_running=4)
    assert await batcher.submit(1) == 2
    for _ in range(3):
        results = await asyncio.gather(*(batcher.submit(i) for i in (-1, 2, -2, -3, 3, -4)), return_exceptions=True)
        assert results[1] == 4 and results[4] == 6
        assert all(isinstance(results[i], RuntimeError) for i in (0, 2, 3, 5))
        assert not any(isinstance(r, FatalWorkerError) for r in results)
    await batcher.close()


async def test_failures_while_a_probe_is_pending_share_it() -> None:
    engine = FakeEngine()
    batcher = _batcher(engine)
    assert await batcher.submit(1) == 2
    results = await asyncio.gather(*(batcher.submit(-i) for i in range(1, 5)), return_exceptions=True)
    await batcher.close()
    assert all(isinstance(r, RuntimeError) and not isinstance(r, FatalWorkerError) for r in results)
    assert engine.added.count(1) == 2  # the success, and one probe for the four poison inputs


async def test_an_engine_that_breaks_after_working_becomes_fatal() -> None:
    engine = FakeEngine()
    batcher = _batcher(engine, max_running=1, canary=0)
    assert await batcher.submit(1) == 2
    engine.broken = True  # the probe (the last good request) now fails too: the engine is at fault
    for _ in range(2):
        with pytest.raises(RuntimeError) as info:
            await batcher.submit(1)
        assert not isinstance(info.value, FatalWorkerError)
    with pytest.raises(FatalWorkerError):
        await batcher.submit(1)
    await batcher.close()


async def test_an_engine_broken_from_the_start_becomes_fatal_despite_a_canary() -> None:
    engine = FakeEngine()
    engine.broken = True
    batcher = _batcher(engine, max_running=4, canary=0)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(5)), return_exceptions=True)
    await batcher.close()
    assert not any(isinstance(r, FatalWorkerError) for r in results[:2])
    assert all(isinstance(r, FatalWorkerError) for r in results[2:])


async def test_a_request_its_caller_gave_up_on_is_aborted_and_frees_its_slot() -> None:
    engine = FakeEngine(steps=lambda n: n, step_s=0.002)
    batcher = _batcher(engine, max_running=1)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(batcher.submit(100_000), 0.05)  # minutes of steps
    assert await asyncio.wait_for(batcher.submit(2), 1.0) == 4  # the only slot was freed
    await batcher.close()
    assert engine.aborted == ["0"] and not engine.running
