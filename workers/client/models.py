"""The client's own models of ``capstream serve``'s answers.

Written here, not imported from ``workers.search``: the client must install and import without
the server's dependencies (LanceDB, vLLM, torch). They are kept in step with the server by
``workers.client.schema_check``, which compares them with the server's OpenAPI schemas (a unit
test runs it against the app). Unknown fields are ignored, so a server that adds a field does
not break a client that predates it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Mode = Literal["hybrid", "vector", "text"]
Modality = Literal["visual", "speech", "page"]


class _Answer(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class MomentText(_Answer):
    """Another row of the same moment folded into a hit (e.g. what was said while it was shown)."""

    segment_id: str
    modality: Modality
    start_s: float
    end_s: float
    text: str
    score: float


class Hit(_Answer):
    """One search hit: a segment of an object, its time range, text and links."""

    object_id: str
    segment_id: str
    uri: str
    bucket: str | None
    key: str | None
    start_s: float
    end_s: float
    caption: str  # the caption, or the transcript when modality is speech
    modality: Modality = "visual"
    language: str | None = None
    collection: str | None = None
    page_number: int | None = None  # a document page's hit (its times are 0)
    score: float
    also: list[MomentText] = Field(default_factory=list)
    thumbnail_url: str  # relative to the server: CapstreamClient.thumbnail(segment_id) fetches it with the key
    media_url: str | None  # presigned link to the media, opening at the segment (#t=start,end) or page (#page=N)


class SearchPage(_Answer):
    """One page of hits; ``next_cursor`` asks for the next one (None: there is no more)."""

    query: str  # as searched: cut to the model's limit when ``truncated``
    mode: Mode | None
    truncated: bool
    notice: str | None
    took_ms: float
    hits: list[Hit]
    next_cursor: str | None = None


class IndexedSegment(_Answer):
    segment_id: str
    segment_index: int
    start_s: float
    end_s: float
    caption: str
    caption_model: str
    embedding_model: str


class Chapter(_Answer):
    title: str
    start_s: float
    end_s: float
    media_url: str | None = None  # presigned link that opens the media at the chapter's start


class Summary(_Answer):
    summary: str
    chapters: list[Chapter]  # ordered, within the media's duration
    duration_s: float
    model: str
    summarized_at: datetime


class ObjectInfo(_Answer):
    """An object's progress (as ``capstream results --json``; None if there is none), its
    indexed segments and its summary (None until the summarize stage wrote one)."""

    object_id: str
    progress: dict[str, Any] | None
    progress_error: str | None = None  # the server could not read progress
    indexed: list[IndexedSegment]
    summary: Summary | None = None


class ObjectHit(_Answer):
    """One object of ``/search/objects``: ranked by its best moment, with its summary."""

    object_id: str
    uri: str
    bucket: str | None
    key: str | None
    collection: str | None = None
    score: float
    summary: str | None = None
    chapters: list[Chapter]
    duration_s: float | None = None
    moments: list[Hit]  # its best moments, best first


class ObjectPage(_Answer):
    query: str
    mode: Mode | None
    truncated: bool
    notice: str | None
    took_ms: float
    hits: list[ObjectHit]


class Health(_Answer):
    status: str
    indexed_rows: int | None
    auth: bool  # False: the server runs --no-auth and every caller sees everything


class AnswerMoment(_Answer):
    """A moment an answer was made from (``id`` is what a citation names)."""

    id: str
    object_id: str
    segment_id: str
    uri: str
    start_s: float
    end_s: float
    modality: Modality
    page_number: int | None = None
    text: str
    said: str | None = None
    with_frame: bool = False
    media_url: str | None = None  # opens the media at the moment (#t=) or the document at its page (#page=)


class AnswerTimings(_Answer):
    retrieval_ms: float
    model_ms: float
    visual_tokens: int | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class Answer(_Answer):
    """``POST /ask``'s answer: its text, the moments it cites (always among ``moments``)."""

    question: str
    question_truncated: bool = False
    answer: str
    found: bool
    citations: list[AnswerMoment]
    moments: list[AnswerMoment]
    cut_off: bool = False
    notice: str | None = None
    timings: AnswerTimings
