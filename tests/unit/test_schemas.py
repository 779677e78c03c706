"""Wire models: round trips, validation, and exported JSON Schema files kept current."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

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
