"""Background upkeep of the segments table, beside the writes of an index worker.

- Full-text (BM25) index on ``caption``: created as soon as the table has rows; new rows are
  folded in by ``optimize`` (until then LanceDB searches them unindexed, so nothing is missed).
- Vector index (IVF_HNSW_SQ, cosine) once the table has ``CAPSTREAM_INDEX_VECTOR_INDEX_MIN_ROWS``
  rows: below that an exact scan is as fast and exact. Building one took 1,060 s for 1M 384-d
  rows on 2 shared cores (``loadtest.search_bench``; docs/search.md), so it runs on its own
  thread and never holds a write.
- Every ``CAPSTREAM_INDEX_OPTIMIZE_INTERVAL_S``: compact small fragments (one per commit),
  update indexes, delete table versions older than ``CAPSTREAM_INDEX_KEEP_VERSIONS_S``.

Its own connection and thread: a slow index build never blocks the writer thread. Several
workers may run it at once; a step that loses a race to another worker's commit is logged
and tried again next time. Failures here never stop the worker: the table stays correct,
only slower.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any, Literal

import structlog
from lancedb.index import FTS, IvfHnswSq

from workers.index.generations import IndexGeneration, TablePointer, configured_generation
from workers.index.table import TEXT_COLUMN, connect, open_table, text_index
from workers.settings import IndexSettings

log = structlog.get_logger("capstream.index")

# Filters and the writer's per-key lookups read these columns. Measured at 100k rows with a
# bucket filter (loadtest.search_bench data): hybrid p50/p95 33/43 ms without, 24/36 ms with;
# building all three took 0.1 s. Bucket has few values (bitmap), the others many (B-tree).
_SCALAR_INDEXES: tuple[tuple[str, Literal["BTREE", "BITMAP"]], ...] = (
    ("bucket", "BITMAP"),
    ("collection", "BITMAP"),
    ("object_id", "BTREE"),
    ("key", "BTREE"),
)


def has_index(table: Any, column: str) -> bool:
    return any(column in idx.columns for idx in table.list_indices())


class IndexMaintenance:
    def __init__(self, settings: IndexSettings, *, generation: IndexGeneration | None = None) -> None:
        """``generation``: these tables; else the ones the index's pointer names at each run."""
        self.settings = settings
        self._pinned = generation
        self.generation = generation or configured_generation(settings)
        self._kick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._db: Any = None
        self._last_optimize = time.monotonic()
        self.runs = 0

    @property
    def table_name(self) -> str:
        return self.generation.segments

    def kick(self) -> None:
        """Run soon (e.g. the first rows were written and there is no full-text index yet)."""
        self._kick.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="index-maintenance")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        interval = self.settings.index_optimize_interval_s
        while True:
            try:
                await asyncio.wait_for(self._kick.wait(), interval)
            except TimeoutError:
                pass
            self._kick.clear()
            try:
                await asyncio.to_thread(self.run_once)
            except Exception as exc:  # the table stays correct; try again next time
                self._db = None
                log.warning("index_maintenance_failed", error=str(exc)[:500])

    def run_once(self, *, optimize: bool | None = None) -> None:
        """One round: indexes that are due, and optimize when its interval passed."""
        if self._db is None:
            self._db = connect(self.settings)
        if self._pinned is None:
            self.generation = TablePointer(self._db, self.settings).current()
        table = open_table(self._db, self.table_name)
        if table is None:
            return
        table.checkout_latest()
        self.runs += 1
        rows = int(table.count_rows())
        if rows and text_index(table) is None:
            started = time.monotonic()
            table.create_index(TEXT_COLUMN, config=FTS(), replace=True)
            log.info("index_fts_created", table=self.table_name, rows=rows, s=round(time.monotonic() - started, 2))
        for column, kind in _SCALAR_INDEXES:
            if rows and not has_index(table, column):
                table.create_scalar_index(column, index_type=kind)
                log.info("index_scalar_created", table=self.table_name, column=column, kind=kind)
        if rows >= self.settings.index_vector_index_min_rows and not has_index(table, "vector"):
            started = time.monotonic()
            table.create_index("vector", config=IvfHnswSq(distance_type="cosine"), replace=True)
            log.info("index_vector_created", table=self.table_name, rows=rows, s=round(time.monotonic() - started, 1))
        due = time.monotonic() - self._last_optimize >= self.settings.index_optimize_interval_s
        if optimize or (optimize is None and due):
            self._last_optimize = time.monotonic()
            started = time.monotonic()
            keep = timedelta(seconds=self.settings.index_keep_versions_s)
            table.optimize(cleanup_older_than=keep)
            removals = open_table(self._db, self.generation.removals)
            if removals is not None:
                removals.optimize(cleanup_older_than=keep)
            log.info("index_optimized", table=self.table_name, rows=rows, s=round(time.monotonic() - started, 2))
