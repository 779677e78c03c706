"""The caption request each segment kind and input mode makes (no model: what is sent)."""

from __future__ import annotations

import json

from schemas.segments import Frame, SegmentBatch
from workers.caption.prompt import (
    PAGE_INSTRUCTION,
    VIDEO_METADATA_KEY,
    build_caption_messages,
    caption_input,
    split_video_metadata,
)


def _segment(kind: str, times: list[float], page: int | None = None) -> SegmentBatch:
    frames = [Frame(index=i, pts_s=t, width=32, height=32, jpeg=b"\xff\xd8x") for i, t in enumerate(times)]
    return SegmentBatch.model_validate(
        {
            "object_id": "o",
            "segment_id": "s",
            "segment_index": 0,
            "source_uri": "file:///x",
            "media_kind": kind,
            "start_s": times[0] if kind == "video" else 0.0,
            "end_s": times[-1] + 0.5 if kind == "video" else 0.0,
            "page_number": page,
            "reason": "end",
            "frames": frames,
        }
    )


def test_video_mode_sends_one_video_with_its_absolute_frame_times() -> None:
    segment = _segment("video", [120.04, 120.54, 121.03])
    messages = build_caption_messages(segment, "Describe.", "video")
    assert caption_input(messages) == "video"
    clean, media_io = split_video_metadata(messages)
    parts = clean[0]["content"]
    assert [p["type"] for p in parts] == ["video_url", "text"]
    assert parts[0]["video_url"]["url"].startswith("data:video/jpeg;base64,")
    assert parts[0]["video_url"]["url"].count(",") == 3  # header + one per frame after the first
    assert VIDEO_METADATA_KEY not in json.dumps(clean)
    assert media_io is not None
    video = media_io["video"]
    # index / fps is the frame's media time: Qwen3-VL's processor writes it into the prompt.
    assert [i / video["fps"] for i in video["frames_indices"]] == [120.04, 120.54, 121.03]
    assert video["num_frames"] == -1 and video["total_num_frames"] >= 121030


def test_images_mode_and_single_frames_keep_the_image_path() -> None:
    for messages in (
        build_caption_messages(_segment("video", [3.0, 3.5]), "Describe.", "images"),
        build_caption_messages(_segment("video", [3.0]), "Describe.", "video"),
    ):
        assert caption_input(messages) == "images"
        assert split_video_metadata(messages)[1] is None
        texts = [p["text"] for p in messages[0]["content"] if p["type"] == "text"]
        assert texts[0] == "<3.0 seconds>"


def test_a_page_asks_for_text_tables_and_figures() -> None:
    messages = build_caption_messages(_segment("page", [0.0], page=7), "Describe.", "video")
    text = messages[0]["content"][-1]["text"]
    assert text == f"Page 7. {PAGE_INSTRUCTION}"
    assert caption_input(messages) == "images"
