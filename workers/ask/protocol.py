"""What ``POST /ask`` and ``capstream ask`` take and give back."""

from __future__ import annotations

from pydantic import BaseModel, Field

from schemas.embeddings import Modality


class AskRequest(BaseModel):
    question: str = Field(description="what to answer; blank is refused (422)")
    k: int | None = Field(default=None, ge=1, le=20, description="moments to retrieve; default CAPSTREAM_ASK_K")
    object_id: str | None = None
    bucket: str | None = None
    prefix: str | None = None


class Moment(BaseModel):
    """One retrieved moment, as the model saw it (``id`` is what a citation names)."""

    id: str = Field(description="m1, m2, ...: the id the model cites")
    object_id: str
    segment_id: str
    uri: str
    start_s: float
    end_s: float
    modality: Modality
    page_number: int | None = Field(default=None, description="the page of a document, which its citation names")
    text: str = Field(description="the caption, or what was said")
    said: str | None = Field(default=None, description="what was said at the same moment, when merged")
    with_frame: bool = Field(default=False, description="its frame (the index's thumbnail) was in the prompt")
    media_url: str | None = Field(default=None, description="opens the media at the moment (serve only)")


class Timings(BaseModel):
    retrieval_ms: float
    model_ms: float
    visual_tokens: int | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class Answer(BaseModel):
    question: str = Field(description="as the model got it (cut to CAPSTREAM_ASK_MAX_QUESTION_CHARS)")
    question_truncated: bool = False
    answer: str
    found: bool = Field(description="the model said the moments hold the answer")
    citations: list[Moment] = Field(description="moments the answer cites: always among `moments`")
    moments: list[Moment]
    cut_off: bool = Field(default=False, description="the reply hit the token budget: no citation is trusted")
    notice: str | None = None
    timings: Timings
