"""The caption request for one segment, in OpenAI chat format.

Both backends send exactly these messages (the in-process engine through vLLM's own chat
renderer, the HTTP client to ``/v1/chat/completions``), so a segment gets the same caption
either way. A video segment goes in one of two ways (``CAPSTREAM_CAPTION_INPUT``):

- ``video``: the frames as one ``video/jpeg`` data URL, with the frame times as vLLM's video
  metadata (``media_io_kwargs``: fps and frame indices). Qwen3-VL's processor merges two
  consecutive frames into one temporal patch and writes ``<t seconds>`` before each patch
  itself, from that metadata: half the visual tokens of the same frames sent as images,
  timestamps in the form the model was trained on. The metadata's clock runs at
  ``VIDEO_CLOCK_HZ`` so a frame's index is its media time in milliseconds and the timestamps
  come out absolute (``index / fps``); without it vLLM assumes 1 fps from 0 s.
- ``images``: each frame as an image after a hand-written ``<t seconds>`` text part.

A still image, a page and a one-frame segment always take the image path (Qwen3-VL's video
processor needs at least one temporal patch of two frames).

The metadata rides inside the video content part under ``VIDEO_METADATA_KEY``, so a request
is still one list of messages for every caller; ``split_video_metadata`` takes it out again
for the backends, which send it the way each API takes it.
"""

from __future__ import annotations

import base64
import copy
import io
from typing import Any, Final, Literal

from PIL import Image

from schemas.segments import Frame, SegmentBatch

ChatMessages = list[dict[str, Any]]
MediaIOKwargs = dict[str, dict[str, Any]]
CaptionInput = Literal["video", "images"]

VIDEO_METADATA_KEY: Final = "capstream_video_metadata"
VIDEO_CLOCK_HZ: Final = 1000.0  # frame indices in milliseconds of media time
# Qwen3-VL's temporal patch: below this many frames a segment is sent as images.
MIN_VIDEO_FRAMES: Final = 2
PAGE_INSTRUCTION: Final = (
    "This is one page of a document. Transcribe its text, reproduce its tables, "
    "and describe its figures and what they show."
)


def build_caption_messages(
    segment: SegmentBatch, instruction: str, input_mode: CaptionInput = "images"
) -> ChatMessages:
    kind = segment.media_kind
    if kind == "page":
        page = segment.page_number
        content = _image_parts(segment.frames, timed=False)
        content.append({"type": "text", "text": f"Page {page}. {PAGE_INSTRUCTION}" if page else PAGE_INSTRUCTION})
        return [{"role": "user", "content": content}]
    if kind == "image":
        content = _image_parts(segment.frames, timed=False)
        content.append({"type": "text", "text": f"A still image. {instruction}"})
        return [{"role": "user", "content": content}]
    if input_mode == "video" and len(segment.frames) >= MIN_VIDEO_FRAMES:
        content = [_video_part(segment)]
    else:
        content = _image_parts(segment.frames, timed=True)
    span = f"The scene spans {segment.start_s:.1f}s to {segment.end_s:.1f}s."
    content.append({"type": "text", "text": f"{span} {instruction}"})
    return [{"role": "user", "content": content}]


def _data_url(mime: str, blobs: list[bytes]) -> str:
    return f"data:{mime};base64," + ",".join(base64.b64encode(b).decode() for b in blobs)


def _image_parts(frames: list[Frame], *, timed: bool) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for frame in frames:
        if timed:
            parts.append({"type": "text", "text": f"<{frame.pts_s:.1f} seconds>"})
        parts.append({"type": "image_url", "image_url": {"url": _data_url("image/jpeg", [frame.jpeg])}})
    return parts


def video_metadata(segment: SegmentBatch) -> dict[str, Any]:
    """vLLM's ``video/jpeg`` metadata for the frames (``VideoMediaIO.load_base64``).

    Qwen3-VL's timestamp of a temporal patch is the mean of its frames' ``index / fps``.
    ``num_frames=-1`` keeps every frame (vLLM's default keeps the first 32).
    """
    indices = [round(f.pts_s * VIDEO_CLOCK_HZ) for f in segment.frames]
    end = max(segment.end_s, segment.frames[-1].pts_s)
    return {
        "fps": VIDEO_CLOCK_HZ,
        "frames_indices": indices,
        "total_num_frames": max(round(end * VIDEO_CLOCK_HZ), indices[-1] + 1, len(indices)),
        "duration": end,
        "num_frames": -1,
    }


def _video_part(segment: SegmentBatch) -> dict[str, Any]:
    return {
        "type": "video_url",
        "video_url": {"url": _data_url("video/jpeg", [f.jpeg for f in segment.frames])},
        VIDEO_METADATA_KEY: video_metadata(segment),
    }


def split_video_metadata(messages: ChatMessages) -> tuple[ChatMessages, MediaIOKwargs | None]:
    """The messages as the API takes them, and the ``media_io_kwargs`` their video needs."""
    metadata = [part[VIDEO_METADATA_KEY] for part in _parts(messages) if VIDEO_METADATA_KEY in part]
    if not metadata:
        return messages, None
    if len(metadata) > 1:
        raise ValueError("one video per caption request: media_io_kwargs are per request, not per video")
    clean = copy.copy(messages)
    for i, message in enumerate(clean):
        if isinstance(message.get("content"), list):
            parts = [{k: v for k, v in p.items() if k != VIDEO_METADATA_KEY} for p in message["content"]]
            clean[i] = {**message, "content": parts}
    return clean, {"video": dict(metadata[0])}


def caption_input(messages: ChatMessages) -> CaptionInput:
    """How ``messages`` carry their frames."""
    return "video" if any(p.get("type") == "video_url" for p in _parts(messages)) else "images"


def _parts(messages: ChatMessages) -> list[dict[str, Any]]:
    return [p for m in messages if isinstance(m.get("content"), list) for p in m["content"] if isinstance(p, dict)]


def build_canary_messages(instruction: str) -> ChatMessages:
    """A request a healthy engine always completes: one small grey frame, the real prompt.

    The engine's batcher runs it after a request failed, before any request has succeeded,
    to tell a poison input from a broken engine (``workers.runtime.continuous``).
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
