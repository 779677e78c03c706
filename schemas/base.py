"""Common bases for the messages on the wire: every message, and every message about one segment."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator


def utc_now() -> datetime:
    return datetime.now(UTC)


class Message(BaseModel):
    """Frozen, strict about unknown fields, bytes as base64 in JSON."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        ser_json_bytes="base64",
        val_json_bytes="base64",
    )

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()


# A thumbnail rides in every message of its segment: keep it small next to the 1 MiB limit.
THUMBNAIL_MAX_BYTES = 16 * 1024


class SegmentRef(Message):
    """The fields that say which segment a message is about, validated the same everywhere,
    plus what travels with it to the search index (source bucket/key/version, thumbnail).

    Segment batches, captions and embeddings all carry them; a stage copies them from its
    input to its output with ``segment_ref()``.
    """

    object_id: str
    segment_id: str
    segment_index: int = Field(ge=0)
    source_uri: str
    start_s: float = Field(ge=0, description="seconds from the start of the media")
    end_s: float = Field(ge=0, description="seconds from the start of the media; >= start_s")
    page_number: int | None = Field(
        default=None, ge=1, description="1-based page of a document (PDF, multi-page TIFF); None for video and images"
    )
    # What travels with the segment to the search index, so no stage re-reads the media.
    bucket: str | None = Field(default=None, description="S3 bucket of the source, if it is an S3 object")
    key: str | None = Field(default=None, description="S3 key of the source (not URL-encoded)")
    version: str | None = Field(
        default=None,
        description="orders versions of one key: 's:' + S3 sequencer left-padded to 32, or 't:' + event time",
    )
    thumbnail: bytes = Field(
        default=b"", max_length=THUMBNAIL_MAX_BYTES, description="small JPEG of the segment (base64 in JSON)"
    )
    event_time: datetime | None = Field(
        default=None,
        description="when the source's event happened (its S3 eventTime, else the event record's time): "
        "the start of the event-to-searchable latency",
    )

    @model_validator(mode="after")
    def _end_not_before_start(self) -> Self:
        if self.end_s < self.start_s:
            raise ValueError(f"end_s {self.end_s} is before start_s {self.start_s}")
        return self

    def segment_ref(self) -> dict[str, Any]:
        """The identifying fields only, as keyword arguments for the next message."""
        return {name: getattr(self, name) for name in SegmentRef.model_fields}
