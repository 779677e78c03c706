"""Wire models: round trips, validation, and exported JSON Schema files kept current."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from schemas.base import SegmentRef
from schemas.captions import Caption
from schemas.embeddings import Embedding
from schemas.export import JSON_DIR, render_schemas
from schemas.segments import Frame, SegmentBatch


def _segment() -> SegmentBatch:
    return SegmentBatch(
        object_id="o",
        segment_id="s",
        segment_index=0,
        source_uri="s3://b/k",
        media_kind="video",
        start_s=0.0,
        end_s=2.5,
        reason="cut",
        frames=[Frame(index=0, pts_s=0.0, width=64, height=32, jpeg=b"\xff\xd8binary\x00\xff\xd9")],
    )


def test_segment_batch_round_trips_bytes_as_base64() -> None:
    seg = _segment()
    wire = seg.to_bytes()
    assert b"binary" not in wire  # frames travel base64-encoded
    assert SegmentBatch.model_validate_json(wire) == seg


def test_segment_batch_rejects_unknown_fields_and_empty_frames() -> None:
    with pytest.raises(ValidationError):
        SegmentBatch.model_validate({**_segment().model_dump(), "surprise": 1})
    with pytest.raises(ValidationError):
        SegmentBatch.model_validate({**_segment().model_dump(), "frames": []})


def test_embedding_dim_must_match_vector() -> None:
    with pytest.raises(ValidationError):
        Embedding(
            embedding_id="e",
            object_id="o",
            segment_id="s",
            segment_index=0,
            source_uri="u",
            start_s=0,
            end_s=1,
            caption="c",
            caption_model="m",
            model="m",
            dim=3,
            vector=[0.0, 1.0],
        )


def test_exported_json_schemas_are_current() -> None:
    for filename, text in render_schemas().items():
        path = JSON_DIR / filename
        assert path.exists(), f"missing {path}; run python -m schemas.export"
        assert path.read_text() == text, f"{path} is stale; run python -m schemas.export"


# Before SegmentRef, captions and embeddings accepted both of these and segment batches
# accepted an end before the start: every message about a segment now validates the same.
_SEGMENT_MESSAGES: dict[str, Callable[..., SegmentRef]] = {
    "segment": lambda **ref: SegmentBatch(**{**_segment().model_dump(), **ref}),
    "caption": lambda **ref: Caption(
        **{**_REF, **ref}, frame_pts=[0.0], text="t", model="m", backend="vllm", latency_s=0.0
    ),
    "embedding": lambda **ref: Embedding(
        **{**_REF, **ref}, embedding_id="e", caption="c", caption_model="m", model="m", dim=1, vector=[0.0]
    ),
}
_REF = {
    "object_id": "o",
    "segment_id": "s",
    "segment_index": 0,
    "source_uri": "s3://b/k",
    "start_s": 0.0,
    "end_s": 2.5,
    "page_number": None,
    "bucket": "b",
    "key": "k",
    "version": "s:0A",
    "thumbnail": b"\xff\xd8thumb",
    "event_time": datetime(2026, 11, 30, 12, 0, tzinfo=UTC),
}


@pytest.mark.parametrize("kind", sorted(_SEGMENT_MESSAGES))
@pytest.mark.parametrize(
    "times", [{"start_s": 2.0, "end_s": 1.0}, {"start_s": -1.0, "end_s": 1.0}], ids=["end_before_start", "negative"]
)
def test_every_segment_message_rejects_impossible_times(kind: str, times: dict[str, float]) -> None:
    make = _SEGMENT_MESSAGES[kind]
    good = make()
    with pytest.raises(ValidationError):
        make(**times)
    with pytest.raises(ValidationError):  # the same on the wire
        type(good).model_validate_json(good.model_copy(update=times).to_bytes())


@pytest.mark.parametrize("kind", sorted(_SEGMENT_MESSAGES))
def test_a_still_image_spans_no_time(kind: str) -> None:
    message = _SEGMENT_MESSAGES[kind](start_s=0.0, end_s=0.0)
    assert type(message).model_validate_json(message.to_bytes()) == message


def test_segment_ref_carries_exactly_the_identifying_fields() -> None:
    seg = _segment()
    assert seg.segment_ref() == {k: getattr(seg, k) for k in _REF}
    caption = Caption(**seg.segment_ref(), frame_pts=[], text="t", model="m", backend="openai", latency_s=0.0)
    assert caption.segment_ref() == seg.segment_ref()
