"""Captions: one per segment, produced by the caption worker."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from schemas.base import SegmentRef, utc_now


class Caption(SegmentRef):
    schema_version: Literal[1] = 1
    frame_pts: list[float]
    text: str
    model: str
    backend: Literal["vllm", "openai"]
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_s: float = Field(ge=0, description="time the model took for this segment")
    created_at: datetime = Field(default_factory=utc_now)
