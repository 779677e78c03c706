"""Structured captions without a model: the per-segment JSON schema (time bounds, size bounds
that fit the token budget), reading a reply back (clamped events, cut-off replies), the text
rendered for search, a BM25 search that finds a caption by its on-screen text, and the caption
stage's wiring (with a model stand-in; the real model is in tests/integration)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import structlog
from PIL import Image
from pydantic import ValidationError
from redis.asyncio import Redis

from schemas.captions import Caption, CaptionEvent, CaptionStructure
from schemas.segments import Frame, SegmentBatch
from tests.search_fixtures import DOCS, Doc, build_table, embed
from workers.caption.backend import CaptionResult
from workers.caption.prompt import ChatMessages
from workers.caption.stage import CaptionStage
from workers.caption.structured import (
    RESPONSE_SCHEMA_KEY,
    StructureLimits,
    openai_response_format,
    parse_structure,
    render_text,
    response_schema,
    split_response_schema,
    with_response_schema,
)
from workers.runtime.stage import RecordContext
from workers.search.query import SearchQuery, search_table
from workers.settings import CaptionSettings

BUDGETS = [160, 192, 256, 1000, 2048, 4096, 8192]


def filled(schema: dict[str, Any], widest_time: float) -> dict[str, Any]:
    """The largest reply ``schema`` allows: every list full, every string at its bound."""
    props = schema["properties"]

    def strings(name: str) -> list[str]:
        p = props[name]
        return ["x" * p["items"]["maxLength"]] * p["maxItems"]

    event_props = props["events"]["items"]["properties"]
    event = {"start_s": widest_time, "end_s": widest_time, "description": "x" * event_props["description"]["maxLength"]}
    return {
        "summary": "x" * props["summary"]["maxLength"],
        "objects": strings("objects"),
        "actions": strings("actions"),
        "text_on_screen": strings("text_on_screen"),
        "events": [event] * props["events"]["maxItems"],
    }


@pytest.mark.parametrize("budget", BUDGETS)
@pytest.mark.parametrize("segment", [(0.0, 3.0), (14390.25, 14400.0)])
def test_the_largest_reply_fits_the_token_budget(budget: int, segment: tuple[float, float]) -> None:
    # One character per token is the most a reply of ASCII can cost (a token is >= 1 byte).
    start, end = segment
    schema = response_schema(start, end, budget)
    reply = filled(schema, widest_time=schema["properties"]["events"]["items"]["properties"]["end_s"]["maximum"])
    jsonschema.validate(reply, schema)
    text = json.dumps(reply, separators=(",", ":"))
    assert len(text) <= budget, (budget, len(text))
    assert parse_structure(text, start, end) is not None


def test_limits_grow_to_full_lists_at_the_default_budget() -> None:
    limits = StructureLimits.for_tokens(4096, time_chars=5)
    assert limits.counts == {"objects": 10, "actions": 6, "text_on_screen": 8, "events": 5}
    assert limits.chars["summary"] >= 600 and limits.chars["text_on_screen"] >= 120


def test_event_times_are_bounded_to_the_segment_in_tenths() -> None:
    schema = response_schema(3.04, 6.0, 4096)

    def reply(start: float, end: float) -> dict[str, Any]:
        event = {"start_s": start, "end_s": end, "description": "a door opens"}
        return {"summary": "s", "objects": [], "actions": [], "text_on_screen": [], "events": [event]}

    jsonschema.validate(reply(3.1, 6.0), schema)
    for start, end in [(3.0, 4.0), (4.0, 6.1), (-1.0, 4.0), (3.15, 4.0)]:  # 3.0 < 3.04: rounded inward
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(reply(start, end), schema)


def test_a_still_gets_no_events() -> None:
    schema = response_schema(0.0, 0.0, 4096)
    assert schema["properties"]["events"]["maxItems"] == 0


def test_the_schema_rides_in_the_messages_and_comes_out_for_the_api() -> None:
    messages = [{"role": "user", "content": [{"type": "text", "text": "Describe."}]}]
    asked = with_response_schema(messages, 1.0, 4.0, 4096)
    assert "between 1.0 and 4.0" in asked[-1]["content"][-1]["text"]
    clean, schema = split_response_schema(asked)
    assert schema == response_schema(1.0, 4.0, 4096)
    assert all(RESPONSE_SCHEMA_KEY not in m for m in clean) and clean[0]["content"][:1] == messages[0]["content"]
    assert split_response_schema(messages) == (messages, None)
    assert openai_response_format(schema)["json_schema"]["schema"] is schema


def test_events_are_clamped_into_the_segment_and_ordered() -> None:
    # What a reply decoded without the grammar (another producer, a replaced backend) may hold.
    reply = {
        "summary": "A bus arrives.",
        "objects": ["bus", " ", "stop sign"],
        "actions": ["driving"],
        "text_on_screen": ["LINE 7"],
        "events": [
            {"start_s": 1.0, "end_s": 12.0, "description": "the bus pulls in"},
            {"start_s": 9.5, "end_s": 4.5, "description": "doors open"},
        ],
    }
    structure = parse_structure(json.dumps(reply), 2.0, 10.0)
    assert structure is not None
    assert [(e.start_s, e.end_s) for e in structure.events] == [(2.0, 10.0), (4.5, 9.5)]
    assert structure.objects == ["bus", "stop sign"]
    caption = Caption(**_ref(2.0, 10.0), text=render_text(structure), structure=structure, caption_format="structured")
    assert caption.structure == structure


def test_a_reply_cut_off_at_the_token_limit_is_not_a_structure() -> None:
    assert parse_structure('{"summary":"A bus arr', 0.0, 3.0) is None
    assert parse_structure("A bus arrives.", 0.0, 3.0) is None
    assert parse_structure('["not", "an", "object"]', 0.0, 3.0) is None


def test_a_caption_refuses_events_outside_its_segment() -> None:
    outside = CaptionStructure(summary="s", events=[CaptionEvent(start_s=1.0, end_s=11.0, description="d")])
    with pytest.raises(ValidationError, match="outside the segment"):
        Caption(**_ref(2.0, 10.0), text="s", structure=outside)
    with pytest.raises(ValidationError, match="before it starts"):
        CaptionEvent(start_s=3.0, end_s=2.0, description="d")


def _ref(start: float, end: float) -> dict[str, Any]:
    return {
        "object_id": "o",
        "segment_id": "s",
        "segment_index": 0,
        "source_uri": "s3://media/x.mp4",
        "start_s": start,
        "end_s": end,
        "frame_pts": [start],
        "model": "m",
        "backend": "vllm",
        "latency_s": 0.1,
    }


STATION = CaptionStructure(
    summary="A train waits at a platform while people walk past.",
    objects=["train", "platform", "clock"],
    actions=["walking", "waiting"],
    text_on_screen=["GATE 42B", "Departures Zurich"],
    events=[CaptionEvent(start_s=2.0, end_s=4.0, description="a conductor waves a lantern")],
)


def test_the_rendered_text_says_every_field() -> None:
    text = render_text(STATION)
    assert text.splitlines()[0] == STATION.summary
    for word in ["clock", "waiting", '"GATE 42B"', '"Departures Zurich"', "2.0-4.0s: a conductor waves a lantern"]:
        assert word in text


@pytest.mark.parametrize(
    ("query", "mode"), [("Departures Zurich", "text"), ("gate 42B", "hybrid"), ("lantern conductor", "text")]
)
@pytest.mark.impure  # LanceDB, MiniLM (sentence-transformers)
def test_search_finds_a_caption_by_its_on_screen_text_and_events(tmp_path: Path, query: str, mode: str) -> None:
    # The index's BM25 column holds the caption text the embed stage received.
    station = Doc("media", "clips/station.mp4", 0, render_text(STATION), (30, 30, 30))
    table = build_table(tmp_path, [*DOCS, station])
    vector = embed([query])[0] if mode == "hybrid" else None
    hits = search_table(table, SearchQuery(q=query, mode=mode, k=3), vector)  # type: ignore[arg-type]
    assert hits and hits[0].segment_id == station.segment_id, [h.caption for h in hits]


class JsonReplyBackend:
    """A model stand-in for the stage's wiring: replies ``reply`` and keeps the requests."""

    name = "vllm"
    model = "stand-in"

    def __init__(self, reply: str) -> None:
        self.reply = reply
        self.calls: list[ChatMessages] = []

    async def start(self) -> None: ...

    async def caption(self, messages: ChatMessages) -> CaptionResult:
        self.calls.append(messages)
        return CaptionResult(text=self.reply, prompt_tokens=1, completion_tokens=9, latency_s=0.0)

    async def close(self) -> None: ...


def _segment(kind: str, start: float, end: float) -> SegmentBatch:
    jpeg = io.BytesIO()
    Image.new("RGB", (64, 48), (90, 120, 30)).save(jpeg, format="JPEG")
    frame = Frame(index=0, pts_s=start, width=64, height=48, jpeg=jpeg.getvalue())
    return SegmentBatch(
        object_id="o",
        segment_id=f"o-{kind}",
        segment_index=0,
        source_uri="s3://media/o",
        media_kind=kind,  # type: ignore[arg-type]
        start_s=start,
        end_s=end,
        reason="end",
        frames=[frame],
        page_number=1 if kind == "page" else None,
    )


async def _run(settings: CaptionSettings, segment: SegmentBatch, reply: str) -> tuple[Caption, JsonReplyBackend]:
    backend = JsonReplyBackend(reply)
    stage = CaptionStage(settings, Redis(), backend)  # Redis() connects lazily: never here
    ctx = RecordContext(
        topic="media.segments", partition=0, offset=0, key="o", value=b"", attempt=1, log=structlog.get_logger()
    )
    return await stage.run_model(segment, ctx, structlog.get_logger()), backend


STATION_REPLY = STATION.model_dump_json()
STRUCTURED = CaptionSettings(caption_format="structured")


async def test_the_stage_asks_for_the_segments_schema_and_keeps_the_structure() -> None:
    caption, backend = await _run(STRUCTURED, _segment("video", 1.0, 5.0), STATION_REPLY)
    _, schema = split_response_schema(backend.calls[0])
    assert schema == response_schema(1.0, 5.0, STRUCTURED.caption_structured_max_tokens)
    assert caption.caption_format == "structured" and caption.structure == STATION
    assert caption.text == render_text(STATION)  # what the embed stage embeds and the index's BM25 holds


async def test_the_stage_clamps_events_the_reply_put_outside() -> None:
    reply = STATION.model_copy(update={"events": [CaptionEvent(start_s=0.0, end_s=9.0, description="d")]})
    caption, _ = await _run(STRUCTURED, _segment("video", 1.0, 5.0), reply.model_dump_json())
    assert caption.structure and [(e.start_s, e.end_s) for e in caption.structure.events] == [(1.0, 5.0)]


async def test_a_cut_off_reply_stays_searchable_as_text() -> None:
    caption, _ = await _run(STRUCTURED, _segment("video", 1.0, 5.0), '{"summary":"A train wai')
    assert caption.caption_format == "structured" and caption.structure is None
    assert caption.text == '{"summary":"A train wai'


async def test_text_format_and_pages_ask_for_prose() -> None:
    for settings, kind in [(CaptionSettings(), "video"), (STRUCTURED, "page")]:
        caption, backend = await _run(settings, _segment(kind, 0.0, 0.0 if kind == "page" else 2.0), "Prose.")
        assert split_response_schema(backend.calls[0])[1] is None
        assert caption.caption_format == "text" and caption.structure is None and caption.text == "Prose."
