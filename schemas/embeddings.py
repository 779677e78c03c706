"""Embeddings of what a moment shows or says (captions, transcripts): what the vector store ingests."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, model_validator

from schemas.base import SegmentRef, utc_now

# What a row's text is: a caption of frames, a transcript of speech, or a document page's text.
Modality = Literal["visual", "speech", "page"]


class Embedding(SegmentRef):
    schema_version: Literal[1] = 1
    embedding_id: str
    caption: str = Field(description="the text embedded: the caption, or the transcript of a speech chunk")
    caption_model: str = Field(description="the model that wrote the text (captioner or recognizer)")
    modality: Modality = "visual"
    language: str | None = Field(default=None, description="the transcript's language (speech rows)")
    model: str
    dim: int = Field(gt=0)
    vector: list[float]
    created_at: datetime = Field(default_factory=utc_now)

    @model_validator(mode="after")
    def _dim_matches(self) -> Embedding:
        if len(self.vector) != self.dim:
            raise ValueError(f"vector has {len(self.vector)} values, dim says {self.dim}")
        return self
