"""Building dead-letter records: one shape for every stage and failure."""

from __future__ import annotations

from schemas.dead_letter import DeadLetter, ErrorKind
from workers.runtime.errors import PermanentError
from workers.runtime.kafka import dlq_topic
from workers.runtime.stage import Output, RecordContext


def dead_letter_for(
    stage: str,
    ctx: RecordContext,
    exc: BaseException,
    kind: ErrorKind,
    *,
    object_id: str | None = None,
    segment_id: str | None = None,
) -> Output:
    reason = exc.reason if isinstance(exc, PermanentError) else "retries_exhausted"
    if isinstance(exc, PermanentError):
        object_id = object_id or exc.object_id
        segment_id = segment_id or exc.segment_id
    letter = DeadLetter(
        stage=stage,
        reason=reason,
        kind=kind,
        error_class=type(exc).__name__,
        message=str(exc)[:2000],
        attempts=ctx.attempt,
        source_topic=ctx.topic,
        partition=ctx.partition,
        offset=ctx.offset,
        key=ctx.key,
        payload=ctx.value,
        object_id=object_id,
        segment_id=segment_id,
        record_time=ctx.record_time,
        first_attempt_at=ctx.first_attempt_at,
    )
    return Output(dlq_topic(ctx.topic), object_id or ctx.key or "", letter)
