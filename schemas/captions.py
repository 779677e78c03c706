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
    frame_count: int | None = Field(default=None, ge=0, description="frames the model was shown")
    visual_tokens: int | None = Field(
        default=None,
        ge=0,
        description="prompt tokens those frames cost (images: one grid each; video: one per 2 frames)",
    )
    caption_input: Literal["video", "images"] | None = Field(
        default=None, description="how the frames were sent: one Qwen3-VL video, or images"
    )
    completion_tokens: int | None = None
    latency_s: float = Field(ge=0, description="time the model took for this segment")
    created_at: datetime = Field(default_factory=utc_now)
