"""Upload the workload into the stack's bucket at a steady rate, then follow each object until
its segments are rows of the search index.

Uploads carry no ``capstream submit`` marker: the store's filer event goes through the
``s3-events`` bridge to the objects topic, as an upload by any S3 client would in production.
An object counts as searchable when Redis says it is ``done`` and the index holds one row per
segment; the rows' ``indexed_at`` give each segment's exact "upload -> searchable" time.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from redis.asyncio import Redis

from loadtest.loadrun.workload import MediaItem
from schemas.progress import ObjectState
from workers.index.table import open_table
from workers.index.writer import SegmentIndex
from workers.s3_client import s3_client
from workers.settings import IndexSettings
from workers.state import ProgressStore, RedisKeys

log = structlog.get_logger("capstream.loadtest.feed")


@dataclass
class ObjectRecord:
    item: MediaItem
    uploaded_at: float  # epoch s, when S3 acknowledged the PUT (the object's event time, near enough)
    upload_s: float
    object_id: str | None = None
    state: str | None = None
    segments_total: int | None = None
    indexed_at: list[float] = field(default_factory=list)  # epoch s, one per index row
    speech_rows: int = 0  # of those, rows of speech chunks (modality "speech")

    @property
    def searchable(self) -> bool:
        return self.state == ObjectState.DONE and len(self.indexed_at) == self.segments_total

    @property
    def finished(self) -> bool:
        failed = self.state in (ObjectState.FAILED, ObjectState.SKIPPED)
        return failed or self.searchable


async def upload_at_rate(
    items: list[MediaItem], rate: float, settings: IndexSettings, records: list[ObjectRecord]
) -> None:
    """PUT object ``i`` at ``i / rate`` s after the first (``rate <= 0``: back to back)."""
    t0 = time.monotonic()
    async with s3_client(settings) as s3:
        for i, item in enumerate(items):
            if rate > 0:
                await asyncio.sleep(max(0.0, t0 + i / rate - time.monotonic()))
            body = item.path.read_bytes()
            began = time.monotonic()
            await s3.put_object(Bucket=settings.s3_bucket, Key=item.key, Body=body)
            records.append(ObjectRecord(item, time.time(), time.monotonic() - began))
    log.info("uploads_done", objects=len(items), seconds=round(time.monotonic() - t0, 1))


def index_rows(index: SegmentIndex) -> dict[str, list[tuple[float, bool]]]:
    """object_id -> (``indexed_at`` in epoch s, a speech row) of each of its rows in the segments table."""
    table = open_table(index.db(), index.table_name)
    if table is None:
        return {}
    columns = ["object_id", "indexed_at", "modality"]
    rows: list[dict[str, Any]] = table.search().select(columns).limit(1_000_000).to_list()
    found: dict[str, list[tuple[float, bool]]] = defaultdict(list)
    for row in rows:
        found[str(row["object_id"])].append((row["indexed_at"].timestamp(), row["modality"] == "speech"))
    return found


async def wait_searchable(
    n: int,
    records: list[ObjectRecord],
    settings: IndexSettings,
    timeout_s: float,
    on_tick: Callable[[], None] = lambda: None,
    poll_s: float = 1.0,
) -> bool:
    """Until all ``n`` objects are uploaded and finished (searchable, or failed); False on timeout.

    ``on_tick`` runs every poll (the caller checks that its workers are alive there).
    """
    redis = Redis.from_url(settings.redis_url)
    store = ProgressStore(redis, RedisKeys(settings.key_prefix))
    index = SegmentIndex(settings)
    deadline = time.monotonic() + timeout_s
    uri_prefix = f"s3://{settings.s3_bucket}/"
    try:
        while True:
            on_tick()
            by_key = {r.item.key: r for r in records}
            unknown = [r for r in by_key.values() if r.object_id is None]
            if unknown:
                for oid in await store.list_ids(limit=4 * n + 100):
                    progress = await store.get(oid)
                    record = by_key.get(progress.source_uri.removeprefix(uri_prefix)) if progress else None
                    if record is not None:
                        record.object_id = oid
            rows = await asyncio.to_thread(index_rows, index)
            for r in by_key.values():
                if r.object_id is None or r.finished:
                    continue
                progress = await store.get(r.object_id)
                if progress is not None:
                    r.state, r.segments_total = progress.state.value, progress.segments_total
                found = rows.get(r.object_id, [])
                r.indexed_at = sorted(t for t, _ in found)
                r.speech_rows = sum(speech for _, speech in found)
            if len(records) == n and all(r.finished for r in records):
                return True
            if time.monotonic() > deadline:
                waiting = [r.item.key for r in records if not r.finished]
                log.error("loadtest_timeout", uploaded=len(records), waiting=waiting[:10])
                return False
            await asyncio.sleep(poll_s)
    finally:
        await redis.aclose()
