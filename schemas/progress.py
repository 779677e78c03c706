"""Per-object progress as stored in Redis and shown by ``capstream status``."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict


class ObjectState(StrEnum):
    DECODING = "decoding"
    DECODED = "decoded"  # every segment published; captions/embeddings still flowing
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"  # an event filter declined it (error says which); nothing was read


class ObjectProgress(BaseModel):
    model_config = ConfigDict(frozen=True)

    schema_version: int = 1
    object_id: str
    source_uri: str = ""
    state: ObjectState
    segments_total: int | None = None
    decoded: int = 0
    captioned: int = 0
    transcribed: int = 0  # speech chunks transcribed (segments_total counts them with the visual segments)
    embedded: int = 0
    error: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def finished(self) -> bool:
        return self.state in (ObjectState.DONE, ObjectState.FAILED, ObjectState.SKIPPED)
