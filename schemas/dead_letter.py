"""Dead letters: what a stage could not process, with the reason, on ``<topic>.dlq``."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from schemas.base import Message, utc_now

ErrorKind = Literal["permanent", "transient_exhausted"]


class DeadLetter(Message):
    schema_version: Literal[1] = 1
    stage: str
    reason: str = Field(description="stable machine-readable code, e.g. corrupt_media")
    kind: ErrorKind
    error_class: str
    message: str
    attempts: int = Field(ge=1)
    source_topic: str
    partition: int
    offset: int
    key: str | None = None
    payload: bytes = Field(description="the original record value (base64 in JSON); empty if truncated")
    payload_size: int = Field(default=0, ge=0, description="size of the original record value")
    payload_truncated: bool = Field(
        default=False, description="payload left out (too large); the original is at source_topic/partition/offset"
    )
    object_id: str | None = None
    segment_id: str | None = None
    record_time: datetime | None = Field(default=None, description="timestamp of the original Kafka record")
    first_attempt_at: datetime | None = Field(default=None, description="when the stage first tried the record")
    failed_at: datetime = Field(default_factory=utc_now)
