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
    max_payload_bytes: int = 512 * 1024,
) -> Output:
    """The dead letter for a record. A payload over ``max_payload_bytes`` (it travels base64
    inside the letter, which must fit the broker's message limit) is left out and the letter
    points at the original record by topic/partition/offset instead."""
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
        payload=ctx.value if len(ctx.value) <= max_payload_bytes else b"",
        payload_size=len(ctx.value),
        payload_truncated=len(ctx.value) > max_payload_bytes,
        object_id=object_id,
        segment_id=segment_id,
        record_time=ctx.record_time,
        first_attempt_at=ctx.first_attempt_at,
    )
    return Output(dlq_topic(ctx.topic), object_id or ctx.key or "", letter)
