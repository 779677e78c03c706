"""Building dead-letter records: one shape for every stage and failure.

Every text in a letter goes through ``safe_text``: letters are read by people and replayed
by tools, so they must never carry a presigned URL's signature, and must always serialise.
"""

from __future__ import annotations

from schemas.dead_letter import DeadLetter, ErrorKind
from workers.runtime.errors import PermanentError
from workers.runtime.failures import permanent_reason
from workers.runtime.kafka import dlq_topic
from workers.runtime.redaction import safe_text
from workers.runtime.stage import Output, RecordContext

# The reason of a letter written after building the proper one failed (see fallback_dead_letter).
DEAD_LETTER_FAILED = "dead_letter_failed"
_MAX_MESSAGE_CHARS = 2000


def describe(exc: BaseException) -> str:
    """`Class: message`, safe to show anywhere."""
    try:
        text = str(exc)
    except Exception:  # an exception whose __str__ itself fails
        text = "<unprintable>"
    return safe_text(f"{type(exc).__name__}: {text}")


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
    if isinstance(exc, PermanentError):
        object_id = object_id or exc.object_id
        segment_id = segment_id or exc.segment_id
    reason = exc.reason if isinstance(exc, PermanentError) else permanent_reason(exc) or "retries_exhausted"
    letter = _letter(stage, ctx, reason, kind, type(exc).__name__, _message(exc), max_payload_bytes)
    letter = letter.model_copy(update={"object_id": object_id, "segment_id": segment_id})
    return Output(dlq_topic(ctx.topic), object_id or ctx.key or "", letter)


def fallback_dead_letter(
    stage: str,
    ctx: RecordContext,
    exc: BaseException,
    letter_error: BaseException,
    kind: ErrorKind,
    *,
    max_payload_bytes: int = 512 * 1024,
) -> Output:
    """The letter for a record whose proper dead letter could not be built or sent (its
    content broke an id, a hook or the encoder): only the raw bytes and both errors, so the
    record still leaves its partition."""
    message = f"{_message(exc)}; writing its dead letter failed too: {describe(letter_error)}"
    letter = _letter(stage, ctx, DEAD_LETTER_FAILED, kind, type(exc).__name__, message, max_payload_bytes)
    return Output(dlq_topic(ctx.topic), ctx.key or "", letter)


def _message(exc: BaseException) -> str:
    try:
        return safe_text(str(exc), _MAX_MESSAGE_CHARS)
    except Exception:
        return "<unprintable>"


def _letter(
    stage: str,
    ctx: RecordContext,
    reason: str,
    kind: ErrorKind,
    error_class: str,
    message: str,
    max_payload_bytes: int,
) -> DeadLetter:
    truncated = len(ctx.value) > max_payload_bytes
    return DeadLetter(
        stage=stage,
        reason=reason,
        kind=kind,
        error_class=error_class,
        message=safe_text(message, _MAX_MESSAGE_CHARS),
        attempts=ctx.attempt,
        source_topic=ctx.topic,
        partition=ctx.partition,
        offset=ctx.offset,
        key=safe_text(ctx.key) if ctx.key is not None else None,
        payload=b"" if truncated else ctx.value,
        payload_size=len(ctx.value),
        payload_truncated=truncated,
        record_time=ctx.record_time,
        first_attempt_at=ctx.first_attempt_at,
    )
