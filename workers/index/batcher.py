"""Batch embeddings into table commits, and tell each waiting record how its batch went.

Each table commit is a new table version (a manifest and a data file, on S3 several
requests), so one row per commit would be slow and leave thousands of versions to clean. The
index stage hands every embedding to the one ``IndexBatcher`` of its process and waits; the
batcher commits when ``CAPSTREAM_INDEX_BATCH_ROWS`` rows are waiting or the oldest has waited
``CAPSTREAM_INDEX_BATCH_AGE_S``. A record's wait ends only once its row is durable, so the
consumer loop commits its offset only then. All writes (and removals) run on one thread, in
order, through one ``SegmentIndex``.

What a waiting record gets when its batch fails: ``PermanentError('dim_mismatch')`` for its
own bad vector (the others are written), ``UnavailableError`` when the store is unreachable
or keeps refusing (an I/O error, or the store does not answer a probe either): the loop then
waits without counting the try; any other error as itself (transient: retried, then DLQ).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog

from schemas.embeddings import Embedding
from schemas.events import ObjectRemoved
from workers.index.writer import SegmentIndex, WriteResult
from workers.runtime.errors import PermanentError, UnavailableError

log = structlog.get_logger("capstream.index")

T = TypeVar("T")

# How LanceDB reports a store it cannot reach or write (its error types vary: ValueError,
# OSError, RuntimeError), by the text of the underlying object-store / I/O error.
_OUTAGE = re.compile(
    r"\bIO\b|LanceError\(IO\)|object.?store|connect|timed? ?out|dns|broken pipe|reset by peer|"
    r"permission denied|read-only file system|no space left|commit conflict|too many concurrent",
    re.IGNORECASE,
)


def is_outage(exc: BaseException) -> bool:
    """The error says the store is unreachable or refuses writes, not that the data is bad."""
    return isinstance(exc, (OSError, TimeoutError, UnavailableError)) or bool(_OUTAGE.search(str(exc)))


@dataclass
class _Waiting:
    embedding: Embedding
    future: asyncio.Future[WriteResult]


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
        assert self._executor is not None, "batcher not started"
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
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
        started = time.monotonic()
        try:
            result: WriteResult = await self.call(self.index.write, [w.embedding for w in waiting])
        except Exception as exc:
            log.warning("index_batch_failed", rows=len(waiting), error=str(exc)[:500], kind=type(exc).__name__)
            for w in waiting:
                if not w.future.done():
                    w.future.set_exception(_copy_error(exc))
            return
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
        for w in waiting:
            if w.future.done():
                continue
            error = result.rejected.get(w.embedding.segment_id)
            if error is not None:
                w.future.set_exception(error)
            else:
                w.future.set_result(result)

    async def _classify(self, exc: Exception) -> Exception:
        """``UnavailableError`` when the store is down (or the error says so), else ``exc``."""
        if is_outage(exc):
            return UnavailableError(f"index store unavailable: {type(exc).__name__}: {str(exc)[:500]}")
        assert self._executor is not None
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self.index.probe)
        except Exception as probe_exc:
            return UnavailableError(f"index store unavailable: {type(probe_exc).__name__}: {str(probe_exc)[:500]}")
        return exc


def _copy_error(exc: Exception) -> Exception:
    """A fresh exception per waiting record (one instance raised in many tasks would share and
    grow one traceback)."""
    if isinstance(exc, UnavailableError):
        return UnavailableError(str(exc))
    if isinstance(exc, PermanentError):
        return PermanentError(exc.reason, str(exc), object_id=exc.object_id, segment_id=exc.segment_id)
    return RuntimeError(f"index write failed: {type(exc).__name__}: {exc}")
