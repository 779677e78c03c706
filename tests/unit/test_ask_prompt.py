"""The ask prompt and its answer schema, without a model."""

from __future__ import annotations

import json

from workers.ask.prompt import answer_schema, build_ask_messages, parse_answer
from workers.ask.protocol import Moment
from workers.caption.structured import split_response_schema

MOMENTS = [
    Moment(
        id="m1",
        object_id="o1",
        segment_id="s1",
        uri="s3://media/a.mp4",
        start_s=5.0,
        end_s=10.0,
        modality="visual",
        text="a kitten on a sofa",
        said="look at her go",
    ),
    Moment(
        id="m2",
        object_id="o2",
        segment_id="s2",
        uri="s3://media/b.mp4",
        start_s=61.5,
        end_s=64.0,
        modality="speech",
        text="the market closed higher",
    ),
]


def test_citations_can_only_name_the_moments_given() -> None:
    schema = answer_schema(["m1", "m2"], max_tokens=256)
    assert schema["properties"]["citations"]["items"] == {"enum": ["m1", "m2"]}
    assert schema["additionalProperties"] is False and set(schema["required"]) == {"answer", "found", "citations"}
    # A reply filled to every bound still fits the budget at one character per token.
    filled = {"answer": "x" * schema["properties"]["answer"]["maxLength"], "found": False, "citations": ["m1", "m2"]}
    assert len(json.dumps(filled, separators=(",", ":"))) <= 256


def test_the_prompt_carries_each_moment_its_time_and_frame() -> None:
    messages = build_ask_messages(
        "What is the kitten doing?", MOMENTS, {"m1": "a.mp4", "m2": "b.mp4"}, {"m1": b"\xff\xd8jpeg"}, 256
    )
    clean, schema = split_response_schema(messages)
    assert schema is not None and schema["properties"]["citations"]["items"]["enum"] == ["m1", "m2"]
    parts = clean[0]["content"]
    texts = [p["text"] for p in parts if p["type"] == "text"]
    assert "[m1] a.mp4 0:05.0–0:10.0\nshown: a kitten on a sofa\nsaid: look at her go" in texts
    assert "[m2] b.mp4 1:01.5–1:04.0\nsaid: the market closed higher" in texts
    images = [p for p in parts if p["type"] == "image_url"]
    assert len(images) == 1 and images[0]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert texts[-1] == "Question: What is the kitten doing?"


def test_a_reply_cut_off_at_the_budget_keeps_no_citation() -> None:
    assert parse_answer('{"answer":"It plays with ya', ["m1"]) is None
    parsed = parse_answer('{"answer":"It plays.","found":true,"citations":["m2","m9","m2"]}', ["m1", "m2"])
    assert parsed is not None and parsed.citations == ["m2"]  # unknown ids dropped, repeats once
