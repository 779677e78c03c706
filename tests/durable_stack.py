"""A local stack whose broker stores on the S3 store, so what was produced survives the
broker's ``kill -9``; for tests of readers and writers across a broker restart."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

from workers.localstack import StackEndpoints, kill_broker, start_broker

OUTAGE_S = 4.0  # longer than any idle gap a reader might wait out (they used 1.5-3 s)
T = TypeVar("T")


@dataclass
class DurableStack:
    """A stack of the module's own (its broker gets killed), the broker storing on the S3 store."""

    endpoints: StackEndpoints

    async def restart_broker_during(self, first_fetch: asyncio.Event, reading: Awaitable[T]) -> T:
        task = asyncio.ensure_future(reading)
        await asyncio.wait_for(first_fetch.wait(), 60)
        assert kill_broker(self.endpoints), "the broker was not running: no outage"
        await asyncio.sleep(OUTAGE_S)
        self.endpoints = await asyncio.to_thread(start_broker, self.endpoints)  # a new pid
        return await asyncio.wait_for(task, 300)
