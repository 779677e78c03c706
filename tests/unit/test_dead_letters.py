"""Dead-letter building and replay targeting: pure logic, no services."""

from __future__ import annotations

import json

import structlog

from schemas.dead_letter import DeadLetter
from schemas.events import parse_event
from workers.runtime.dead_letters import dead_letter_for
from workers.runtime.errors import PermanentError
from workers.runtime.loop import _record_time
from workers.runtime.stage import RecordContext
from workers.state.dead_letter_log import letter_object_ids


def _ctx(value: bytes, key: str | None = "media/a.mp4") -> RecordContext:
    return RecordContext("media.segments", 0, 7, key, value, 3, structlog.get_logger())


def test_oversized_payload_is_left_out_and_the_letter_points_at_the_record() -> None:
    out = dead_letter_for(
        "caption", _ctx(b"x" * 2000), RuntimeError("boom"), "transient_exhausted", object_id="o", max_payload_bytes=1000
    )
    letter = out.value
    assert isinstance(letter, DeadLetter)
    assert letter.payload == b"" and letter.payload_truncated and letter.payload_size == 2000
    assert (letter.source_topic, letter.partition, letter.offset) == ("media.segments", 0, 7)
    assert out.topic == "media.segments.dlq" and letter.reason == "retries_exhausted" and letter.attempts == 3


def test_small_payload_is_kept_with_the_permanent_reason() -> None:
    exc = PermanentError("corrupt_media", "bad bytes", object_id="obj")
    letter = dead_letter_for("decode", _ctx(b"{}"), exc, "permanent").value
    assert isinstance(letter, DeadLetter)
    assert letter.payload == b"{}" and not letter.payload_truncated and letter.object_id == "obj"


def test_replay_finds_decode_objects_in_the_payload_not_the_record_key() -> None:
    event = {"uri": "s3://media/a.mp4", "etag": "e", "size": 3}
    letter = dead_letter_for(
        "decode", _ctx(json.dumps(event).encode()), RuntimeError("s3 5xx"), "transient_exhausted", object_id=None
    ).value
    assert isinstance(letter, DeadLetter)
    assert letter_object_ids(letter) == [parse_event(event).objects[0].object_id]


def test_record_time_tolerates_non_millisecond_timestamps() -> None:
    assert _record_time(1_764_000_000_000) is not None
    assert _record_time(10**19) is None  # microseconds or garbage from a foreign producer
    assert _record_time(None) is None
