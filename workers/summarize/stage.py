"""``SummarizeStage``: each ``object.done`` outcome on ``media.outcomes`` becomes the object's
summary and chapters in the ``objects`` table.

Steps for one outcome (all in ``delivered``: the effect is the table, so the offset is
committed after the row is written):
1. Skip what is not ``object.done``, and an object that already has its summary (a redelivered
   outcome makes no second model call).
2. Read the object's timeline from the segments table. ``done`` means every segment was
   embedded, not yet indexed: wait, re-reading, until the table holds the outcome's
   ``segments_total`` rows (at most ``CAPSTREAM_SUMMARIZE_INDEX_WAIT_S`` per try; a try that
   runs out is retried, then dead-lettered ``transient_exhausted``). An object whose removal
   is recorded is stale: skipped.
3. Summarize it (``Summarizer``: windows, then a join).
4. Write the row; read the object's rows again, and delete the summary if they went meanwhile
   (a removal or a newer version racing: ``workers.index.objects``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import ValidationError

from schemas.outcome import ObjectOutcome
from schemas.summary import ObjectSummary
from workers.access.collections import UNFILED
from workers.caption.backend import CaptionBackend
from workers.index.objects import ObjectsTable
from workers.index.writer import SegmentIndex, retry_conflicts
from workers.runtime.errors import PermanentError
from workers.runtime.metrics import Outcome
from workers.runtime.stage import Output, RecordContext, Stage
from workers.settings import SummarizeSettings
from workers.summarize.summarizer import Summarizer
from workers.summarize.timeline import Timeline, read_timeline

_POLL_S = 1.0
T = TypeVar("T")


class NotIndexedYet(Exception):
    """The object's rows have not all reached the index: tried again later."""


class SummarizeStage(Stage[ObjectOutcome]):
    name = "summarize"

    def __init__(self, settings: SummarizeSettings, backend: CaptionBackend) -> None:
        self.settings = settings
        self.input_topic = settings.topic_outcomes
        self.output_topics = ()
        self.backend = backend
        # One thread for the store calls: ``SegmentIndex`` is one writer thread's.
        self._store = ThreadPoolExecutor(1, thread_name_prefix="summarize-store")
        self.index = SegmentIndex(settings)
        self._summaries: ObjectsTable | None = None
        self.collections = settings.collection_rules()
        self.summarizer = Summarizer(
            backend, settings.summarize_window_chars, settings.summarize_max_tokens, settings.summarize_max_chapters
        )

    async def setup(self) -> None:
        await self.backend.start()

    async def close(self) -> None:
        await self.backend.close()
        self._store.shutdown(wait=False)

    @property
    def summaries(self) -> ObjectsTable:
        if self._summaries is None:
            self._summaries = ObjectsTable(self.index.db(), self.settings)
        return self._summaries

    async def _on_store(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._store, fn, *args)

    def parse(self, value: bytes) -> ObjectOutcome:
        try:
            return ObjectOutcome.model_validate_json(value)
        except ValidationError as exc:
            raise PermanentError("malformed_message", f"not an ObjectOutcome: {exc}") from exc

    def object_id_of(self, item: ObjectOutcome | None, ctx: RecordContext) -> str | None:
        return item.object_id if item is not None else ctx.key

    async def process(self, item: ObjectOutcome, ctx: RecordContext) -> AsyncGenerator[Output, None]:
        return
        yield  # pragma: no cover - an async generator that yields nothing

    async def delivered(self, item: ObjectOutcome, ctx: RecordContext) -> None:
        log = ctx.log.bind(object_id=item.object_id)
        if item.event != "object.done" or item.segments_total == 0:
            ctx.verdict.outcome = Outcome.FILTERED
            return
        if await self._on_store(lambda: self.summaries.get([item.object_id])):
            ctx.verdict.outcome = Outcome.DUPLICATE
            log.info("object_already_summarized")
            return
        timeline = await self._timeline(item)
        if timeline is None:
            ctx.verdict.outcome = Outcome.STALE
            log.info("summary_skipped", why="object_removed")
            return
        name = (timeline.key or timeline.uri).rsplit("/", 1)[-1]
        started = time.perf_counter()
        ctx.metrics.model_requests.inc()
        draft = await self.summarizer.summarize(timeline, name)
        ctx.metrics.tokens(draft.prompt_tokens, draft.completion_tokens)
        summary = ObjectSummary(
            object_id=item.object_id,
            uri=timeline.uri,
            bucket=timeline.bucket,
            key=timeline.key,
            version=timeline.version,
            collection=self.collections.of_uri(timeline.uri) or UNFILED,
            duration_s=timeline.duration_s,
            summary=draft.summary,
            chapters=draft.chapters,
            moments=len(timeline.moments),
            passes=draft.passes,
            model=self.backend.model,
            summarized_at=datetime.now(UTC),
        )
        kept = await self._on_store(self._write, summary)
        log.info(
            "object_summarized" if kept else "summary_dropped_object_gone",
            moments=summary.moments,
            chapters=len(summary.chapters),
            passes=draft.passes,
            cut_off=draft.cut_off,
            latency_s=round(time.perf_counter() - started, 3),
        )

    async def _timeline(self, item: ObjectOutcome) -> Timeline | None:
        """The object's timeline once every row is indexed; None when its removal is recorded."""
        want = max(item.segments_total or 1, 1)
        deadline = time.monotonic() + self.settings.summarize_index_wait_s
        while True:
            timeline = await self._on_store(self._read, item.object_id)
            have = len(timeline.moments) if timeline else 0
            if have >= want:
                return timeline
            if await self._on_store(self.index.dead, {}, {item.object_id}):
                return None
            if time.monotonic() >= deadline:
                raise NotIndexedYet(
                    f"{have} of {want} moments of {item.object_id} in the index after "
                    f"{self.settings.summarize_index_wait_s:g} s (CAPSTREAM_SUMMARIZE_INDEX_WAIT_S)"
                )
            await asyncio.sleep(_POLL_S)

    def _read(self, object_id: str) -> Timeline | None:
        table = self.index.table()
        return None if table is None else read_timeline(table, object_id)

    def _write(self, summary: ObjectSummary) -> bool:
        """Upsert, then check the object still has rows (else take the summary back)."""
        retry_conflicts(lambda: self.summaries.upsert(summary))
        if self._read(summary.object_id) is None:
            retry_conflicts(lambda: self.summaries.delete([summary.object_id]))
            return False
        return True
