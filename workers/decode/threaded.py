"""Run a blocking generator (PyAV decode) on a thread and consume it from asyncio with a
small bounded hand-off, so the event loop never blocks and a slow consumer slows decode."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Executor
from typing import TypeVar

T = TypeVar("T")

_END = object()


async def iterate_in_thread(
    make_iter: Callable[[], Iterator[T]], executor: Executor | None = None, maxsize: int = 2
) -> AsyncIterator[T]:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[object] = asyncio.Queue(maxsize)
    cancelled = threading.Event()

    def put(item: object) -> bool:
        fut = asyncio.run_coroutine_threadsafe(queue.put(item), loop)
        while not cancelled.is_set():
            try:
                fut.result(timeout=0.5)
                return True
            except TimeoutError:
                continue
        fut.cancel()
        return False

    def produce() -> None:
        source = make_iter()
        try:
            for item in source:
                if not put(item):
                    return
            put(_END)
        except BaseException as exc:  # handed to the consumer side, re-raised there
            put(exc)
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()  # a generator releases its container now, not at garbage collection

    worker = loop.run_in_executor(executor, produce)
    try:
        while True:
            item = await queue.get()
            if item is _END:
                break
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        cancelled.set()
        await asyncio.shield(worker)
