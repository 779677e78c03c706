"""The caption request for one segment, in OpenAI chat format.

Both backends send exactly these messages (the in-process engine through ``LLM.chat``, the
HTTP client to ``/v1/chat/completions``), so a segment gets the same caption either way.
Frames go in as images interleaved with their timestamps: Qwen3-VL reads the times as text.
"""

from __future__ import annotations

import base64
import io
from typing import Any

from PIL import Image

from schemas.segments import Frame, SegmentBatch

ChatMessages = list[dict[str, Any]]


def build_caption_messages(segment: SegmentBatch, instruction: str) -> ChatMessages:
    content: list[dict[str, Any]] = []
    for frame in segment.frames:
        content.append({"type": "text", "text": f"<{frame.pts_s:.1f} seconds>"})
        data_url = "data:image/jpeg;base64," + base64.b64encode(frame.jpeg).decode()
        content.append({"type": "image_url", "image_url": {"url": data_url}})
    span = (
        "A still image."
        if segment.media_kind == "image"
        else f"The scene spans {segment.start_s:.1f}s to {segment.end_s:.1f}s."
    )
    content.append({"type": "text", "text": f"{span} {instruction}"})
    return [{"role": "user", "content": content}]


def build_canary_messages(instruction: str) -> ChatMessages:
    """A request a healthy engine always completes: one small grey frame, the real prompt.

    The engine's batcher runs it after a request failed, before any request has succeeded,
    to tell a poison input from a broken engine (``workers.runtime.microbatch``).
    """
    jpeg = io.BytesIO()
    Image.new("RGB", (64, 64), (128, 128, 128)).save(jpeg, format="JPEG")
    frame = Frame(index=0, pts_s=0.0, width=64, height=64, jpeg=jpeg.getvalue())
    segment = SegmentBatch(
        object_id="canary",
        segment_id="canary",
        segment_index=0,
        source_uri="canary:",
        media_kind="image",
        start_s=0.0,
        end_s=0.0,
        reason="end",
        frames=[frame],
    )
    return build_caption_messages(segment, instruction)
