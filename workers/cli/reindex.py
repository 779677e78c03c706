"""``capstream reindex``: rebuild the search index from the topics, its source of truth.

Reads the removals topic, then the embeddings topic, from the beginning (no consumer group:
the index workers' offsets are untouched) and writes through the same ``SegmentIndex`` the
workers use. Writes are idempotent and order-free (upserts on ``segment_id``, versions and
tombstones decided over what is known, not over arrival order), so reindexing while index
workers run, or twice, gives the same table. Removals go first so that embeddings of removed
versions are never written at all. Records are streamed in batches, never held in memory.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass

from aiokafka import AIOKafkaConsumer
from pydantic import ValidationError

from schemas.embeddings import Embedding
from schemas.events import ObjectRemoved
from workers.index.writer import SegmentIndex
from workers.settings import IndexSettings

_BATCH = 1000


@dataclass
class ReindexCounts:
    removals: int = 0
    embeddings: int = 0
    written: int = 0
    skipped: int = 0  # superseded or removed versions
    other_model: int = 0
    dim_mismatch: int = 0
    malformed: int = 0
    rows: int = 0  # rows in the table afterwards


async def _batches(bootstrap: str, topic: str, idle_ms: int = 2000) -> AsyncIterator[list[bytes]]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        while batch := await consumer.getmany(timeout_ms=idle_ms, max_records=_BATCH):
            yield [r.value or b"" for recs in batch.values() for r in recs]
    finally:
        await consumer.stop()


async def reindex(settings: IndexSettings, *, from_scratch: bool = False, model: str | None = None) -> ReindexCounts:
    index = SegmentIndex(settings)
    counts = ReindexCounts()
    if from_scratch:
        await asyncio.to_thread(index.drop)
    async for values in _batches(settings.kafka_bootstrap, settings.topic_removals):
        for value in values:
            try:
                removed = ObjectRemoved.model_validate_json(value)
            except ValidationError:
                counts.malformed += 1
                continue
            await asyncio.to_thread(index.remove, removed)
            counts.removals += 1
    async for values in _batches(settings.kafka_bootstrap, settings.topic_embeddings):
        embeddings: list[Embedding] = []
        for value in values:
            try:
                e = Embedding.model_validate_json(value)
            except ValidationError:
                counts.malformed += 1
                continue
            if model is not None and e.model != model:
                counts.other_model += 1
                continue
            embeddings.append(e)
        counts.embeddings += len(embeddings)
        result = await asyncio.to_thread(index.write, embeddings)
        counts.written += result.written
        counts.skipped += len(result.skipped)
        counts.dim_mismatch += len(result.rejected)
    counts.rows = await asyncio.to_thread(index.count_rows)
    return counts


async def cmd_reindex(from_scratch: bool, model: str | None, as_json: bool) -> int:
    settings = IndexSettings()
    counts = await reindex(settings, from_scratch=from_scratch, model=model)
    if as_json:
        print(json.dumps(asdict(counts)))
    else:
        print(
            f"reindex {settings.index_uri} table {settings.index_table}: "
            + " ".join(f"{k}={v}" for k, v in asdict(counts).items())
        )
    return 0 if counts.dim_mismatch == 0 else 1
