"""A local stack whose broker stores on the S3 store, so what was produced survives the
broker's ``kill -9``; for tests of readers and writers across a broker restart."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

from schemas.embeddings import Embedding
from schemas.ids import embedding_id, segment_id
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


def one_object_embeddings(n: int, key: str, dim: int) -> list[Embedding]:
    """``n`` segments of one new object ``media/key``, each with a distinct ``dim``-wide vector:
    bulk that takes a reader more than one fetch."""
    object_id = str(uuid.uuid4())
    return [
        Embedding(
            object_id=object_id,
            segment_id=(sid := segment_id(object_id, i)),
            segment_index=i,
            source_uri=f"s3://media/{key}",
            bucket="media",
            key=key,
            version="s:" + "0" * 31 + "1",
            start_s=float(i),
            end_s=float(i + 1),
            embedding_id=embedding_id(sid, "e"),
            caption=f"moment {i} of {key}",
            caption_model="m",
            model="e",
            dim=dim,
            vector=[1.0 / (j + 1 + i) for j in range(dim)],
        )
        for i in range(n)
    ]
