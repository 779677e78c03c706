"""Captions: one per segment, produced by the caption worker."""

from __future__ import annotations

from datetime import datetime
from typing import Literal, Self

from pydantic import Field, model_validator

from schemas.base import Message, SegmentRef, utc_now

CaptionFormat = Literal["text", "structured"]


class CaptionEvent(Message):
    """Something that happens within the segment, in media seconds (absolute, like the segment's)."""

    start_s: float = Field(ge=0)
    end_s: float = Field(ge=0)
    description: str

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.end_s < self.start_s:
            raise ValueError(f"event ends ({self.end_s}) before it starts ({self.start_s})")
        return self


class CaptionStructure(Message):
    """A structured caption (``CAPSTREAM_CAPTION_FORMAT=structured``), decoded under a JSON schema."""

    summary: str
    objects: list[str] = Field(default_factory=list, description="things visible in the segment")
    actions: list[str] = Field(default_factory=list, description="what is being done")
    text_on_screen: list[str] = Field(default_factory=list, description="visible text, verbatim (OCR)")
    events: list[CaptionEvent] = Field(default_factory=list, description="what happens when, inside the segment")


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
    caption_format: CaptionFormat | None = Field(
        default=None, description="text: free prose; structured: `structure`, with `text` rendered from it"
    )
    structure: CaptionStructure | None = Field(
        default=None, description="the structured caption; null in text format (or if the model's JSON was cut off)"
    )

    @model_validator(mode="after")
    def _events_inside(self) -> Self:
        for event in self.structure.events if self.structure else ():
            if event.start_s < self.start_s or event.end_s > self.end_s:
                raise ValueError(
                    f"event {event.start_s}-{event.end_s}s lies outside the segment {self.start_s}-{self.end_s}s"
                )
        return self
