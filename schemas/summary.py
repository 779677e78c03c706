"""An object's summary and chapters, as the summarize stage writes them to the ``objects``
table and as ``serve`` and ``capstream search --level object`` show them."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class Chapter(BaseModel):
    title: str
    start_s: float = Field(ge=0, description="where the chapter starts in the media (ordered, within its duration)")
    end_s: float = Field(ge=0)


class ObjectSummary(BaseModel):
    """One row of the ``objects`` table: the summary of one object version."""

    object_id: str
    uri: str
    bucket: str | None = None
    key: str | None = None
    version: str | None = None
    collection: str
    duration_s: float = Field(ge=0, description="end of the object's last indexed moment")
    summary: str
    chapters: list[Chapter]
    moments: int = Field(description="timed captions and transcripts the summary was written from")
    passes: int = Field(description="model calls: one per window of the timeline, plus one to join windows")
    model: str
    summarized_at: datetime
