"""Rebuild the search index from the topics, its source of truth (``capstream reindex``).

Reads the removals topic, then the embeddings topic, to their end (``read_to_end``: no
consumer group, so the index workers' offsets are untouched, and no stop at an idle moment of
a restarting broker) and writes through the same ``SegmentIndex`` the workers use. Writes are
idempotent and order-free (upserts on ``segment_id``, versions and tombstones decided over
what is known, not over arrival order), so reindexing while index workers run, or twice,
gives the same table. Removals go first so that embeddings of removed
versions are never written at all. Records are streamed in batches, never held in memory.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from pydantic import ValidationError

from schemas.embeddings import Embedding
from schemas.events import ObjectRemoved
from workers.index.writer import SegmentIndex
from workers.runtime.kafka import read_to_end
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


async def reindex(settings: IndexSettings, *, from_scratch: bool = False, model: str | None = None) -> ReindexCounts:
    index = SegmentIndex(settings)
    counts = ReindexCounts()
    if from_scratch:
        await asyncio.to_thread(index.drop)
    async for records in read_to_end(settings.kafka_bootstrap, [settings.topic_removals], _BATCH):
        for value in (r.value or b"" for r in records):
            try:
                removed = ObjectRemoved.model_validate_json(value)
            except ValidationError:
                counts.malformed += 1
                continue
            await asyncio.to_thread(index.remove, removed)
            counts.removals += 1
    async for records in read_to_end(settings.kafka_bootstrap, [settings.topic_embeddings], _BATCH):
        embeddings: list[Embedding] = []
        for value in (r.value or b"" for r in records):
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
