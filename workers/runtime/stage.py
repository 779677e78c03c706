"""What a stage is: typed input, setup once, ``process`` a record into output messages.

The consumer loop (``workers.runtime.loop``) owns polling, concurrency, retries, dead
letters and commits; a stage only turns one input into outputs and records side effects
once those outputs are acknowledged by the broker.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

import structlog
from pydantic import ValidationError

from schemas.base import Message, SegmentRef
from schemas.dead_letter import DeadLetter
from workers.runtime.errors import PermanentError
from workers.runtime.metrics import Outcome, StageMetrics, WorkerMetrics

In = TypeVar("In")


@dataclass(frozen=True)
class Output:
    topic: str
    key: str
    value: Message


@dataclass
class RecordVerdict:
    """What became of a record that finished without error, as the stage saw it: ``done``
    unless the stage skipped it (the loop counts it under this outcome)."""

    outcome: Outcome = Outcome.DONE


@dataclass(frozen=True)
class RecordContext:
    topic: str
    partition: int
    offset: int
    key: str | None
    value: bytes
    attempt: int
    log: structlog.typing.FilteringBoundLogger
    record_time: datetime | None = None  # the Kafka record's timestamp
    first_attempt_at: datetime | None = None  # when this worker first started the record
    metrics: StageMetrics = field(default_factory=lambda: WorkerMetrics().for_stage("unlabelled"))
    verdict: RecordVerdict = field(default_factory=lambda: RecordVerdict())

    @property
    def owner(self) -> str:
        """Identity of the Kafka record, stable across redeliveries of that record."""
        return f"{self.topic}/{self.partition}/{self.offset}"


class Stage(abc.ABC, Generic[In]):
    name: str
    input_topic: str
    output_topics: tuple[str, ...]

    async def setup(self) -> None:  # noqa: B027 - optional hook
        """Load models, open clients. Called once before the first record."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release what setup acquired."""

    @abc.abstractmethod
    def parse(self, value: bytes) -> In:
        """Decode a record value; raise PermanentError if it can never be processed."""

    @abc.abstractmethod
    def process(self, item: In, ctx: RecordContext) -> AsyncGenerator[Output, None]:
        """Yield outputs as they are ready (streamed to the broker as they come)."""

    async def delivered(self, item: In, ctx: RecordContext) -> None:  # noqa: B027 - optional hook
        """Every output of ``item`` is acknowledged: record progress/idempotency markers."""

    async def dead_lettered(self, item: In | None, letter: DeadLetter, ctx: RecordContext) -> None:  # noqa: B027
        """The record went to the DLQ: show it as failed in progress."""

    def object_id_of(self, item: In | None, ctx: RecordContext) -> str | None:
        """The object a dead letter for this record is about (records are keyed by object id)."""
        return ctx.key


class ModelBackend(Protocol):
    """What a model-serving stage needs from its backend (vLLM engine or HTTP client); the
    shared implementations are in ``workers.runtime.model_backend``."""

    name: str
    model: str

    async def start(self) -> None: ...
    async def close(self) -> None: ...


class SegmentProgress(Protocol):
    """The per-segment progress a model stage keeps (``workers.state.ProgressStore``)."""

    async def fail(self, object_id: str, error: str) -> bool: ...
    async def is_marked(self, stage: Any, segment_id: str) -> bool: ...
    async def mark(self, stage: Any, object_id: str, segment_id: str) -> bool: ...


R = TypeVar("R", bound=SegmentRef)
B = TypeVar("B", bound=ModelBackend)


class ModelStage(Stage[R], Generic[R, B]):
    """A stage whose input is one wire message about one segment and whose work is done by a
    model backend: backend lifecycle, input validation, skipping finished segments, the one
    output per segment, done markers and failure reporting written once. A stage adds
    ``run_model``: the output message for one segment."""

    input_model: type[R]
    backend: B
    progress: SegmentProgress
    done_marker: str  # the per-stage marker of a finished segment ("captioned", "embedded")

    def __init__(self, input_topic: str, output_topic: str, progress: SegmentProgress, backend: B) -> None:
        self.input_topic = input_topic
        self.output_topics = (output_topic,)
        self.progress = progress
        self.backend = backend

    @abc.abstractmethod
    async def run_model(self, item: R, ctx: RecordContext, log: structlog.typing.FilteringBoundLogger) -> Message:
        """The output message for ``item`` (keyed by its object id on the output topic)."""

    async def setup(self) -> None:
        await self.backend.start()

    async def close(self) -> None:
        await self.backend.close()

    def parse(self, value: bytes) -> R:
        try:
            return self.input_model.model_validate_json(value)
        except ValidationError as exc:
            raise PermanentError("malformed_message", f"not a {self.input_model.__name__}: {exc}") from exc

    async def process(self, item: R, ctx: RecordContext) -> AsyncGenerator[Output, None]:
        log = ctx.log.bind(object_id=item.object_id, segment_id=item.segment_id)
        if await self.progress.is_marked(self.done_marker, item.segment_id):
            log.info(f"segment_already_{self.done_marker}")
            ctx.verdict.outcome = Outcome.DUPLICATE
            return
        ctx.metrics.model_requests.inc()
        yield Output(self.output_topics[0], item.object_id, await self.run_model(item, ctx, log))

    async def delivered(self, item: R, ctx: RecordContext) -> None:
        await self.progress.mark(self.done_marker, item.object_id, item.segment_id)

    def object_id_of(self, item: R | None, ctx: RecordContext) -> str | None:
        return (item.object_id if item is not None else None) or ctx.key

    async def dead_lettered(self, item: R | None, letter: DeadLetter, ctx: RecordContext) -> None:
        if item is not None and item.segment_id and await self.progress.is_marked(self.done_marker, item.segment_id):
            return  # another copy of this segment already succeeded: the object is not failed
        if letter.object_id:
            await self.progress.fail(letter.object_id, f"{self.name} {letter.reason}: {letter.message}")
