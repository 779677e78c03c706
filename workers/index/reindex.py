"""Rebuild the search index from the topics, its source of truth (``capstream reindex``).

Reads the removals topic, then the embeddings topic, to their end (``read_to_end``: no
consumer group, so the index workers' offsets are untouched, and no stop at an idle moment of
a restarting broker) and writes through the same ``SegmentIndex`` the workers use. Writes are
idempotent and order-free (upserts on ``segment_id``, versions and tombstones decided over
what is known, not over arrival order), so reindexing while index workers run, or twice,
gives the same table. Removals go first so that embeddings of removed versions are never
written at all. Records are streamed in batches, never held in memory.

``--from-scratch`` cannot delete the index (it used to drop the table first, and after the
topics' retention had removed old records most of the index was gone). Steps:

1. Refuse at once when the topics no longer reach back to the oldest row of the index in use
   (a partition's log starts after offset 0, at a record written after that row).
2. Write a new generation (``workers.index.generations``) from the topics, remembering where
   each partition's read ended.
3. Verify it against the generation in use: every row that was there before the rebuild began
   is in the new one, or the new one's rows and tombstones say why not (a newer version, a
   removal). Otherwise refuse, saying how many rows the topics no longer hold.
4. Build its full-text and scalar indexes (search needs them the moment it switches).
5. Switch the pointer. Writers that still wrote to the old generation resolved the pointer
   before the switch, so their records are on the topics by now:
6. Catch up: read from where step 2 ended to the new end into the new generation.
7. Drop generations older than the previous one (the previous one is the way back).

A failure or refusal before step 5 drops the new generation and leaves the index in use as it
was.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import structlog
from aiokafka import TopicPartition
from pydantic import ValidationError

from schemas.embeddings import Embedding
from schemas.events import ObjectRemoved
from workers.index.generations import IndexGeneration, TablePointer, new_generation
from workers.index.maintenance import IndexMaintenance
from workers.index.table import sql_literal
from workers.index.versions import ObjectVersion
from workers.index.writer import SegmentIndex
from workers.runtime.kafka import PartitionStart, partition_starts, read_to_end
from workers.settings import IndexSettings

log = structlog.get_logger("capstream.index")

_BATCH = 1000
# Producer clocks (record timestamps) and the index writers' clocks (indexed_at) may disagree.
_CLOCK_SKEW = timedelta(minutes=5)


class ReindexRefused(RuntimeError):
    """A rebuild would lose rows of the index in use; nothing was switched."""


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
    # --from-scratch only:
    table: str | None = None  # the generation switched to
    previous: str | None = None  # the generation it replaced (kept)
    verified_rows: int = 0  # rows of the previous generation checked to be in the new one
    caught_up: int = 0  # records read after the switch
    dropped: list[str] = field(default_factory=list)  # stale generations' tables


async def reindex(settings: IndexSettings, *, from_scratch: bool = False, model: str | None = None) -> ReindexCounts:
    if from_scratch:
        return await rebuild(settings, model=model)
    index = SegmentIndex(settings)
    counts = ReindexCounts()
    await _replay(settings, index, counts, model)
    counts.rows = await asyncio.to_thread(index.count_rows)
    return counts


async def rebuild(settings: IndexSettings, *, model: str | None = None) -> ReindexCounts:
    """``reindex --from-scratch``: the steps of the module docstring."""
    counts = ReindexCounts()
    in_use = SegmentIndex(settings)
    old = await asyncio.to_thread(_RowSpan.of, in_use, model)
    if old.rows:
        starts = await partition_starts(settings.kafka_bootstrap, settings.topic_embeddings)
        if problem := reach_problem(settings.topic_embeddings, starts, old.oldest):
            raise ReindexRefused(problem)
    began = datetime.now(UTC)
    generation = new_generation(settings, began)
    fresh = SegmentIndex(settings, generation=generation)
    log.info("reindex_started", table=generation.segments, replacing=in_use.table_name, rows=old.rows)
    try:
        ends = await _replay(settings, fresh, counts, model)
        counts.verified_rows = await asyncio.to_thread(_verify, in_use, fresh, began, model, settings)
        await asyncio.to_thread(IndexMaintenance(settings, generation=generation).run_once, optimize=False)
    except BaseException:
        await asyncio.to_thread(_drop, fresh, generation)
        raise
    pointer = TablePointer(fresh.db(), settings)
    switched = await asyncio.to_thread(pointer.switch, generation)
    counts.table, counts.previous = generation.segments, switched.previous.segments if switched.previous else None
    log.info("reindex_switched", table=generation.segments, previous=counts.previous)
    before = counts.removals + counts.embeddings + counts.malformed + counts.other_model
    await _replay(settings, fresh, counts, model, start=ends)
    counts.caught_up = counts.removals + counts.embeddings + counts.malformed + counts.other_model - before
    counts.dropped = await asyncio.to_thread(_drop_stale, fresh, pointer)
    counts.rows = await asyncio.to_thread(fresh.count_rows)
    return counts


async def _replay(
    settings: IndexSettings,
    index: SegmentIndex,
    counts: ReindexCounts,
    model: str | None,
    start: Mapping[TopicPartition, int] | None = None,
) -> dict[TopicPartition, int]:
    """Removals, then embeddings, read to their end into ``index``; where each partition ended."""
    ends: dict[TopicPartition, int] = dict(start or {})
    async for records in read_to_end(settings.kafka_bootstrap, [settings.topic_removals], _BATCH, start):
        for r in records:
            ends[TopicPartition(r.topic, r.partition)] = r.offset + 1
            try:
                removed = ObjectRemoved.model_validate_json(r.value or b"")
            except ValidationError:
                counts.malformed += 1
                continue
            await asyncio.to_thread(index.remove, removed)
            counts.removals += 1
    async for records in read_to_end(settings.kafka_bootstrap, [settings.topic_embeddings], _BATCH, start):
        embeddings: list[Embedding] = []
        for r in records:
            ends[TopicPartition(r.topic, r.partition)] = r.offset + 1
            try:
                e = Embedding.model_validate_json(r.value or b"")
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
    return ends


def reach_problem(topic: str, starts: Mapping[int, PartitionStart], oldest_row: datetime | None) -> str | None:
    """Why the topic cannot rebuild an index whose oldest row was written at ``oldest_row``,
    or None. A partition has lost records when its log no longer starts at offset 0; if its
    first record left is younger than the oldest row, that row may have come from a record
    that is gone. (A partition that starts at 0 has lost nothing, whatever its first record's
    time: a quiet partition's first record may well be younger than the oldest row.)"""
    if oldest_row is None:
        return None
    for partition, start in sorted(starts.items()):
        if start.offset == 0:
            continue
        if start.timestamp_ms is None:
            return (
                f"{topic}[{partition}] has lost every record up to offset {start.offset} (retention) and holds "
                f"none now, while the index holds rows since {oldest_row.isoformat()}"
            )
        first = datetime.fromtimestamp(start.timestamp_ms / 1000, UTC)
        if first > oldest_row + _CLOCK_SKEW:
            return (
                f"{topic}[{partition}] starts at offset {start.offset}, a record of {first.isoformat()}: "
                f"retention removed what came before, and the index holds rows since {oldest_row.isoformat()}. "
                "A rebuild would lose them; they need their media decoded again"
            )
    return None


@dataclass
class _RowSpan:
    rows: int
    oldest: datetime | None

    @classmethod
    def of(cls, index: SegmentIndex, model: str | None) -> _RowSpan:
        table = index.table()
        if table is None:
            return cls(0, None)
        query = table.search().select(["indexed_at"]).limit(None)
        if model is not None:
            query = query.where(f"embedding_model = {sql_literal(model)}")
        times = query.to_arrow().column("indexed_at")
        if len(times) == 0:
            return cls(0, None)
        oldest = pc.min(times).as_py()
        return cls(len(times), oldest)


def _verify(in_use: SegmentIndex, fresh: SegmentIndex, began: datetime, model: str | None, s: IndexSettings) -> int:
    """Every row the index in use had when the rebuild began is in ``fresh`` or dead there;
    raises ``ReindexRefused`` otherwise. Returns the number of rows checked."""
    old_table, new_table = in_use.table(), fresh.table()
    if old_table is None:
        return 0
    old_table.checkout_latest()
    columns = ["segment_id", "object_id", "bucket", "key", "version", "indexed_at", "embedding_model"]
    old: pa.Table = old_table.search().select(columns).limit(None).to_arrow()
    keep = pc.less(old.column("indexed_at"), pa.scalar(began, pa.timestamp("us", tz="UTC")))
    if model is not None:
        keep = pc.and_(keep, pc.equal(old.column("embedding_model"), model))
    old = old.filter(keep)
    if new_table is None:
        missing = old
    else:
        kept = new_table.search().select(["segment_id"]).limit(None).to_arrow().column("segment_id")
        missing = old.filter(pc.invert(pc.is_in(old.column("segment_id"), value_set=kept)))
    if missing.num_rows:
        lost = _unexplained(fresh, missing.to_pylist())
        if lost:
            oldest = min(r["indexed_at"] for r in lost)
            example = lost[0]
            raise ReindexRefused(
                f"{len(lost)} of the {old.num_rows} rows of table {in_use.table_name!r} are not on "
                f"{s.topic_embeddings} any more (the oldest indexed {oldest.isoformat()}; e.g. segment "
                f"{example['segment_id']} of {example['bucket']}/{example['key']}): retention removed records "
                "the index still holds. Nothing was switched; the index in use is untouched"
            )
    return int(old.num_rows)


def _unexplained(fresh: SegmentIndex, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Of rows missing from ``fresh``, those it does not declare dead (superseded, removed)."""
    versions: dict[tuple[str, str], set[ObjectVersion]] = defaultdict(set)
    for r in rows:
        if r["bucket"] and r["key"]:
            versions[(r["bucket"], r["key"])].add(ObjectVersion(r["object_id"], r["version"]))
    dead = fresh.dead(versions, {r["object_id"] for r in rows})
    return [r for r in rows if r["object_id"] not in dead]


def _drop(index: SegmentIndex, generation: IndexGeneration) -> None:
    db = index.db()
    for name in (generation.segments, generation.removals):
        if name in db.table_names():
            db.drop_table(name)


def _drop_stale(index: SegmentIndex, pointer: TablePointer) -> list[str]:
    stale = pointer.stale_tables()
    for name in stale:
        index.db().drop_table(name)
    if stale:
        log.info("reindex_dropped", tables=stale)
    return stale
