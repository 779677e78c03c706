"""Segment batches: one message carries one segment's sampled frames inline as JPEG."""

from __future__ import annotations

from datetime import datetime
from typing import Literal, Self

from pydantic import Field, model_validator

from schemas.base import Message, SegmentRef, utc_now

SegmentReason = Literal["cut", "window", "end"]


class Frame(Message):
    index: int = Field(ge=0, description="position within the segment")
    pts_s: float = Field(description="presentation time in seconds from the start of the media")
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    jpeg: bytes = Field(description="JPEG bytes (base64 in JSON)")


class SegmentBatch(SegmentRef):
    schema_version: Literal[1] = 1
    # "page": one page of a document, rendered; its SegmentRef.page_number says which.
    media_kind: Literal["image", "video", "page"]
    reason: SegmentReason
    frames: list[Frame] = Field(min_length=1)
    decoded_at: datetime = Field(default_factory=utc_now)
    speech_chunks: int = Field(
        default=0,
        ge=0,
        description="on the object's last segment (reason 'end'): speech chunks it published, all before this one",
    )

    @model_validator(mode="after")
    def _pages_are_numbered(self) -> Self:
        if (self.media_kind == "page") != (self.page_number is not None):
            raise ValueError(f"a page segment has a page_number, others none (media_kind={self.media_kind!r})")
        return self
