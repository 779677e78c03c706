"""Poison records against a stage: publishing them to the real broker, running the stage's
consumer loop on them in the background, waiting for what it does with them; and, for the
engine tests, trying a poison input as often as the loop would before dead-lettering it.

The tests that prove one bad record never stops a stage (test_poison_records,
test_consumer_loop, test_continuous, test_caption_poison_engine) each had their own copy of
these; one copy makes them wait, stop the loop and report a loop that died the same way.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import pytest
from aiokafka import AIOKafkaProducer

from workers.runtime.errors import FatalWorkerError
from workers.runtime.loop import StageLoop
from workers.settings import CommonSettings

T = TypeVar("T")
P = TypeVar("P")

STOP_TIMEOUT_S = 30.0  # a stopped loop drains its in-flight records and commits first


async def produce(settings: CommonSettings, topic: str, values: Sequence[bytes], *, key: bytes | None = None) -> None:
    """Publish ``values`` in order, each acknowledged by the broker: keyed by their index, so
    spread over the partitions, or all by ``key``, so in one partition at offsets 0, 1, 2..."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for i, value in enumerate(values):
            await producer.send_and_wait(topic, value, key=str(i).encode() if key is None else key)
    finally:
        await producer.stop()


@asynccontextmanager
async def running(loop: StageLoop[Any], release: asyncio.Event | None = None) -> AsyncIterator[asyncio.Task[None]]:
    """The loop runs in a task inside the block. On the way out ``release`` is set (whatever
    the test held back), so the loop can drain, then the loop is stopped and awaited: a loop
    that died raises its error here."""
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    try:
        yield task
    finally:
        if release is not None:
            release.set()
        stop.set()
        await asyncio.wait_for(task, STOP_TIMEOUT_S)


async def eventually(
    check: Callable[[], T | Awaitable[T]],
    what: str = "timed out",
    *,
    loop_task: asyncio.Task[None] | None = None,
    timeout_s: float = 20.0,
) -> T:
    """What ``check`` (plain or async) returns once it is truthy. Fails with ``what`` after
    ``timeout_s``, and at once when ``loop_task`` ended: a stage must outlive its poison."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        if loop_task is not None and loop_task.done():
            ended = "cancelled" if loop_task.cancelled() else loop_task.exception() or "returned"
            pytest.fail(f"the loop stopped ({ended}) before: {what}")
        result = check()
        value = await result if inspect.isawaitable(result) else result
        if value:
            return value
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.05)


async def fails_as_the_inputs_fault(
    call: Callable[[P], Awaitable[object]], poison: P, attempts: int, expected: type[Exception] = Exception
) -> None:
    """``call(poison)`` tried ``attempts`` times, as the consumer loop retries a record before
    it dead-letters it: each try fails with ``expected`` and none is taken for a broken
    engine (FatalWorkerError, which stops the worker)."""
    for _ in range(attempts):
        with pytest.raises(expected) as info:
            await call(poison)
        assert not isinstance(info.value, FatalWorkerError), (
            f"a poison input was taken for a broken engine: {info.value}"
        )
