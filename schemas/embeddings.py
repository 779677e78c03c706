"""Embeddings of captions: what the vector store ingests."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, model_validator

from schemas.base import SegmentRef, utc_now


class Embedding(SegmentRef):
    schema_version: Literal[1] = 1
    embedding_id: str
    caption: str
    caption_model: str
    model: str
    dim: int = Field(gt=0)
    vector: list[float]
    created_at: datetime = Field(default_factory=utc_now)

    @model_validator(mode="after")
    def _dim_matches(self) -> Embedding:
        if len(self.vector) != self.dim:
            raise ValueError(f"vector has {len(self.vector)} values, dim says {self.dim}")
        return self
