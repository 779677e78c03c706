"""Batch embeddings into table commits, and tell each waiting record how its batch went.

Each table commit is a new table version (a manifest and a data file, on S3 several
requests), so one row per commit would be slow and leave thousands of versions to clean. The
index stage hands every embedding to the one ``IndexBatcher`` of its process and waits; the
batcher commits when ``CAPSTREAM_INDEX_BATCH_ROWS`` rows are waiting or the oldest has waited
``CAPSTREAM_INDEX_BATCH_AGE_S``. A record's wait ends only once its row is durable, so the
consumer loop commits its offset only then. All writes (and removals) run on one thread, in
order, through one ``SegmentIndex``.

What a waiting record gets when its batch fails (``workers.index.faults`` says what an
exception means, by its type and status code):

- ``UnavailableError`` when the store is out: an outage by type, or the store does not answer
  a probe either, or no row of a batch of several can be written. The loop then waits
  without counting the try.
- Otherwise the batch is written again in halves, down to single rows (the engine batcher's
  isolation), so its good rows are written and only a row that fails alone is blamed:
  ``PermanentError('unwritable_row')`` when its error is a data error by type (dead-lettered
  at once), else the error as itself (transient: retried, then dead-lettered).
- ``PermanentError('dim_mismatch')`` for a vector of another width (refused before the write).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog

from schemas.embeddings import Embedding
from schemas.events import ObjectRemoved
from workers.index.faults import Fault, classify, unavailable, unwritable_row
from workers.index.writer import SegmentIndex, WriteResult
from workers.runtime.errors import PermanentError, UnavailableError

log = structlog.get_logger("capstream.index")

T = TypeVar("T")


@dataclass
class _Waiting:
    embedding: Embedding
    future: asyncio.Future[WriteResult]


@dataclass
class _Isolation:
    """One failed batch being written in halves: rows written so far, and the rows that failed
    alone with an error whose type does not say whose fault it is."""

    written: int = 0
    lone: list[tuple[_Waiting, Exception]] = field(default_factory=list)


class IndexBatcher:
    """One per worker process, shared by its index stages (see the module doc).

    ``start``/``close`` are reference counted: the embeddings stage and the removals stage
    both use it, and it stops (after a last flush) when the last of them closes.
    """

    def __init__(self, index: SegmentIndex, batch_rows: int, batch_age_s: float) -> None:
        self.index = index
        self.batch_rows = batch_rows
        self.batch_age_s = batch_age_s
        self.on_write: list[Callable[[WriteResult], None]] = []  # run after each durable write (maintenance kick)
        self._executor: ThreadPoolExecutor | None = None
        self._pending: list[_Waiting] = []
        self._first_at = 0.0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._users = 0
        self.rows_written = 0
        self.batches = 0

    @property
    def running(self) -> bool:
        return self._task is not None

    async def start(self) -> None:
        self._users += 1
        if self._task is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="index-writer")
            self._task = asyncio.create_task(self._run(), name="index-batcher")

    async def close(self) -> None:
        self._users -= 1
        if self._users > 0 or self._task is None:
            return
        while self._pending:
            await self._flush(self._take())
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None
        assert self._executor is not None
        self._executor.shutdown(wait=True)
        self._executor = None

    async def add(self, embedding: Embedding) -> WriteResult:
        """Wait until ``embedding``'s batch is durable; raises what its batch means for it."""
        assert self._task is not None, "batcher not started"
        future: asyncio.Future[WriteResult] = asyncio.get_running_loop().create_future()
        if not self._pending:
            self._first_at = time.monotonic()
        self._pending.append(_Waiting(embedding, future))
        self._wake.set()
        return await future

    async def remove(self, removed: ObjectRemoved) -> int:
        """Apply a removal on the writer thread, after the writes queued before it."""
        return await self.call(self.index.remove, removed)

    async def call(self, fn: Any, *args: Any) -> Any:
        """Run a store call on the writer thread; an outage becomes ``UnavailableError``."""
        try:
            return await self._on_writer(fn, *args)
        except PermanentError:
            raise
        except Exception as exc:
            raise await self._classify(exc) from exc

    def _take(self) -> list[_Waiting]:
        batch, self._pending = self._pending[: self.batch_rows], self._pending[self.batch_rows :]
        self._first_at = time.monotonic()
        return batch

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending and len(self._pending) < self.batch_rows:
                left = self._first_at + self.batch_age_s - time.monotonic()
                if left <= 0:
                    break
                try:
                    await asyncio.wait_for(self._wake.wait(), left)
                except TimeoutError:
                    break
                self._wake.clear()
            if self._pending:
                await self._flush(self._take())
            if self._pending:
                self._wake.set()

    async def _flush(self, batch: list[_Waiting]) -> None:
        waiting = [w for w in batch if not w.future.done()]  # a cancelled record is redelivered
        if not waiting:
            return
        exc = await self._write(waiting)
        if exc is not None:
            log.warning("index_batch_failed", rows=len(waiting), error=str(exc)[:500], kind=type(exc).__name__)
            await self._isolate(waiting, exc)

    async def _write(self, rows: list[_Waiting]) -> Exception | None:
        """Commit ``rows`` together and answer their records; or the error, with nobody answered."""
        started = time.monotonic()
        try:
            result: WriteResult = await self._on_writer(self.index.write, [w.embedding for w in rows])
        except Exception as exc:
            return exc
        self._written(rows, result, started)
        return None

    def _written(self, rows: list[_Waiting], result: WriteResult, started: float) -> None:
        """``rows`` were committed together: count them, run the hooks, answer their records."""
        self.batches += 1
        self.rows_written += result.written
        log.info(
            "index_batch_written",
            rows=result.written,
            skipped=len(result.skipped),
            rejected=len(result.rejected),
            deleted=result.deleted,
            ms=round((time.monotonic() - started) * 1000, 1),
        )
        for hook in self.on_write:
            hook(result)
        for w in rows:
            if w.future.done():
                continue
            error = result.rejected.get(w.embedding.segment_id)
            if error is not None:
                w.future.set_exception(error)
            else:
                w.future.set_result(result)

    async def _isolate(self, rows: list[_Waiting], exc: Exception) -> None:
        """After ``rows`` failed as one write: an outage fails them all with ``UnavailableError``;
        otherwise write them in halves until each bad row has failed alone (module doc)."""
        state = _Isolation()
        outage = await self._split(rows, exc, state)
        if outage is None and len(state.lone) > 1 and state.written == 0:
            outage = unavailable(state.lone[0][1])  # the store refuses every row: not theirs to pay for
        for w, error in state.lone:
            if not w.future.done():
                w.future.set_exception(_copy_error(outage or error))
        for w in rows:
            if not w.future.done():
                assert outage is not None
                w.future.set_exception(_copy_error(outage))

    async def _split(self, rows: list[_Waiting], exc: Exception, state: _Isolation) -> Exception | None:
        """``rows`` failed together with ``exc``: settle each, or return the outage that stops it."""
        fault = classify(exc)
        if fault is Fault.OUTAGE:
            return unavailable(exc)
        if fault is Fault.UNKNOWN:
            outage = await self._probe()
            if outage is not None:
                return outage
        if len(rows) == 1:
            w = rows[0]
            if fault is Fault.DATA:
                e = w.embedding
                w.future.set_exception(unwritable_row(exc, object_id=e.object_id, segment_id=e.segment_id))
                log.warning(
                    "index_row_unwritable", segment_id=e.segment_id, error=str(exc)[:500], kind=type(exc).__name__
                )
            else:
                state.lone.append((w, exc))
            return None
        mid = len(rows) // 2
        for half in (rows[:mid], rows[mid:]):
            half = [w for w in half if not w.future.done()]
            if not half:
                continue
            half_exc = await self._write(half)
            if half_exc is None:
                state.written += len(half)
                continue
            stop = await self._split(half, half_exc, state)
            if stop is not None:
                return stop
        return None

    async def _on_writer(self, fn: Any, *args: Any) -> Any:
        assert self._executor is not None, "batcher not started"
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _probe(self) -> UnavailableError | None:
        """The outage when the store does not answer (it lists its tables), else None."""
        try:
            await self._on_writer(self.index.probe)
        except Exception as probe_exc:
            return unavailable(probe_exc)
        return None

    async def _classify(self, exc: Exception) -> Exception:
        """``UnavailableError`` when the store is out (by the error's type, or by a probe), else ``exc``."""
        if classify(exc) is Fault.OUTAGE:
            return unavailable(exc)
        return await self._probe() or exc


def _copy_error(exc: Exception) -> Exception:
    """A fresh exception per waiting record (one instance raised in many tasks would share and
    grow one traceback)."""
    if isinstance(exc, UnavailableError):
        return UnavailableError(str(exc))
    if isinstance(exc, PermanentError):
        return PermanentError(exc.reason, str(exc), object_id=exc.object_id, segment_id=exc.segment_id)
    return RuntimeError(f"index write failed: {type(exc).__name__}: {exc}")
