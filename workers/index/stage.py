"""The index stages: embeddings and removals into the segments table.

Both produce nothing on Kafka: their effect is the table. They do it in ``delivered``, which
the consumer loop awaits before it counts a record finished, so an offset is committed only
after the record's row (or removal) is durable. ``capstream worker index`` runs both, sharing
one ``IndexBatcher`` (one writer thread) and one ``IndexMaintenance``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from datetime import UTC, datetime
from typing import TypeVar

from pydantic import ValidationError

from schemas.embeddings import Embedding
from schemas.events import ObjectRemoved
from workers.index.batcher import IndexBatcher
from workers.index.maintenance import IndexMaintenance
from workers.index.writer import SegmentIndex, WriteResult
from workers.runtime.errors import PermanentError
from workers.runtime.metrics import Outcome
from workers.runtime.stage import Output, RecordContext, Stage
from workers.settings import IndexSettings

M = TypeVar("M", Embedding, ObjectRemoved)


class IndexParts:
    """What the index stages of one worker process share: the batcher (writer thread) and the
    background maintenance, started with the first stage and stopped with the last."""

    def __init__(self, settings: IndexSettings, *, maintenance: bool = True) -> None:
        self.settings = settings
        self.batcher = IndexBatcher(SegmentIndex(settings), settings.index_batch_rows, settings.index_batch_age_s)
        self.maintenance = IndexMaintenance(settings) if maintenance else None
        self._fts_kicked = False
        self.batcher.on_write.append(self._after_write)

    def _after_write(self, result: WriteResult) -> None:
        # The first rows of this process: let maintenance create the full-text index now
        # rather than one optimize interval later (it checks whether one exists).
        if self.maintenance is not None and result.written and not self._fts_kicked:
            self._fts_kicked = True
            self.maintenance.kick()

    async def start(self) -> None:
        await self.batcher.start()
        if self.maintenance is not None:
            self.maintenance.start()

    async def close(self) -> None:
        await self.batcher.close()
        if self.maintenance is not None and not self.batcher.running:
            await self.maintenance.close()


class _TableStage(Stage[M]):
    """A stage whose effect is the table: it parses ``input_model``, produces nothing on
    Kafka, and does its work in ``delivered`` (which the loop awaits before committing)."""

    input_model: type[M]

    def __init__(self, input_topic: str, parts: IndexParts) -> None:
        self.input_topic = input_topic
        self.output_topics = ()
        self.parts = parts

    async def setup(self) -> None:
        await self.parts.start()

    async def close(self) -> None:
        await self.parts.close()

    def parse(self, value: bytes) -> M:
        try:
            return self.input_model.model_validate_json(value)
        except ValidationError as exc:
            raise PermanentError("malformed_message", f"not an {self.input_model.__name__}: {exc}") from exc

    async def process(self, item: M, ctx: RecordContext) -> AsyncGenerator[Output, None]:
        return
        yield  # pragma: no cover - an async generator that yields nothing


class IndexStage(_TableStage[Embedding]):
    """``media.embeddings`` -> one row per segment (upsert on ``segment_id``)."""

    name = "index"
    input_model = Embedding

    def __init__(self, settings: IndexSettings, parts: IndexParts) -> None:
        super().__init__(settings.topic_embeddings, parts)

    async def delivered(self, item: Embedding, ctx: RecordContext) -> None:
        result = await self.parts.batcher.add(item)
        if item.segment_id in result.skipped:
            ctx.verdict.outcome = Outcome.STALE
            ctx.log.info(
                "index_row_skipped",
                object_id=item.object_id,
                segment_id=item.segment_id,
                why="superseded_or_removed",
                version=item.version,
            )
        elif item.event_time is not None:
            ctx.metrics.event_to_indexed.observe(max((datetime.now(UTC) - item.event_time).total_seconds(), 0.0))

    def object_id_of(self, item: Embedding | None, ctx: RecordContext) -> str | None:
        return (item.object_id if item is not None else None) or ctx.key


class RemovalStage(_TableStage[ObjectRemoved]):
    """``media.removals`` -> delete the object's rows and keep a tombstone."""

    name = "index-removals"
    input_model = ObjectRemoved

    def __init__(self, settings: IndexSettings, parts: IndexParts) -> None:
        super().__init__(settings.topic_removals, parts)

    async def delivered(self, item: ObjectRemoved, ctx: RecordContext) -> None:
        rows = await self.parts.batcher.remove(item)
        ctx.log.info("object_removed_from_index", object_id=item.object_id, key=item.key, rows=rows)

    def object_id_of(self, item: ObjectRemoved | None, ctx: RecordContext) -> str | None:
        return item.object_id if item is not None else None
