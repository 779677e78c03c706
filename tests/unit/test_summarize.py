"""The summarize stage's pure parts: timeline windows, the reply schema's bounds, chapter
order, the passes over a long timeline, and grouping search hits into objects."""

from __future__ import annotations

import json
from typing import Any

import pytest

from schemas.summary import Chapter
from workers.caption.backend import CaptionResult
from workers.caption.prompt import ChatMessages
from workers.caption.structured import RESPONSE_SCHEMA_KEY
from workers.search.objects import group_by_object
from workers.search.query import SearchHit
from workers.summarize.prompt import chapters_in_order, window_schema
from workers.summarize.summarizer import CUT_OFF, Summarizer
from workers.summarize.timeline import TimedText, Timeline, line_of, window_text, windows


def moments(n: int, text: str = "a dog runs across the yard") -> list[TimedText]:
    return [TimedText(i * 5.0, i * 5.0 + 5.0, "speech" if i % 3 == 2 else "visual", f"{text} {i}") for i in range(n)]


def test_windows_keep_every_moment_once_in_order_within_the_budget() -> None:
    ms = moments(40)
    cut = windows(ms, 300)
    assert len(cut) > 1
    assert [m for w in cut for m in w] == ms
    for w in cut:
        assert len(window_text(w, 300)) <= 300


def test_a_line_longer_than_the_window_is_cut_not_dropped() -> None:
    long = TimedText(0.0, 4.0, "visual", "word " * 500)
    cut = windows([long, *moments(2)], 200)
    assert cut[0] == [long] and len(window_text(cut[0], 200)) == 200


def test_lines_say_when_and_what_kind() -> None:
    assert line_of(TimedText(65.0, 70.5, "speech", " hello\nthere ")) == "[1:05.0–1:10.5] said: hello there"
    assert line_of(TimedText(0.0, 0.0, "page", "Invoice", page_number=3)) == "[page 3] Invoice"


def _filled(schema: dict[str, Any]) -> str:
    """The longest JSON the schema allows (every string and list at its bound)."""
    chapter = schema["properties"]["chapters"]["items"]["properties"]
    one = {"title": "x" * chapter["title"]["maxLength"], "start_s": chapter["start_s"]["maximum"]}
    one["end_s"] = chapter["end_s"]["maximum"]
    reply = {
        "summary": "x" * schema["properties"]["summary"]["maxLength"],
        "chapters": [one] * schema["properties"]["chapters"]["maxItems"],
    }
    return json.dumps(reply, separators=(",", ":"))


@pytest.mark.parametrize("max_tokens", [128, 256, 1024, 4096])
def test_a_reply_filled_to_every_bound_fits_the_token_budget(max_tokens: int) -> None:
    schema = window_schema(12.0, 3725.33, max_tokens, max_chapters=12)
    assert len(_filled(schema)) <= max_tokens
    times = schema["properties"]["chapters"]["items"]["properties"]["start_s"]
    assert (times["minimum"], times["maximum"]) == (12.0, 3725.4)


def test_chapters_are_put_in_order_inside_the_media() -> None:
    raw = [
        Chapter(title="end", start_s=50.0, end_s=70.0),  # past the media's end
        Chapter(title="middle", start_s=20.0, end_s=10.0),  # ends before it starts
        Chapter(title="start", start_s=0.0, end_s=30.0),  # runs into the next one
        Chapter(title="  ", start_s=5.0, end_s=6.0),  # blank
        Chapter(title="again", start_s=0.0, end_s=25.0),  # a second chapter at one start
    ]
    fixed = chapters_in_order(raw, duration_s=60.0)
    assert [(c.title, c.start_s, c.end_s) for c in fixed] == [
        ("start", 0.0, 10.0),
        ("middle", 10.0, 20.0),
        ("end", 50.0, 60.0),
    ]


class ScriptedModel:
    """Answers each call with the next scripted reply and keeps the prompts it was given."""

    model = "scripted"

    def __init__(self, replies: list[str]) -> None:
        self.replies = replies
        self.prompts: list[ChatMessages] = []

    async def caption(self, messages: ChatMessages) -> CaptionResult:
        self.prompts.append(messages)
        return CaptionResult(text=self.replies.pop(0), prompt_tokens=10, completion_tokens=5, latency_s=0.0)


def window_reply(summary: str, *chapters: tuple[str, float, float]) -> str:
    return json.dumps(
        {"summary": summary, "chapters": [{"title": t, "start_s": a, "end_s": b} for t, a, b in chapters]}
    )


async def test_a_long_timeline_takes_a_pass_per_window_and_one_to_join() -> None:
    ms = moments(12)
    timeline = Timeline("o1", "s3://b/k.mp4", "b", "k.mp4", None, ms)
    n = len(windows(ms, 200))
    assert n >= 3
    replies = [window_reply(f"part {i}", (f"ch {i}", i * 10.0, i * 10.0 + 5)) for i in range(n)]
    model = ScriptedModel([*replies, json.dumps({"summary": "the whole thing"})])
    draft = await Summarizer(model, 200, 256, 4).summarize(timeline, "k.mp4")
    assert draft.passes == n + 1 and draft.summary == "the whole thing"
    assert [c.title for c in draft.chapters] == [f"ch {i}" for i in range(n)]
    assert all(RESPONSE_SCHEMA_KEY in p[-1] for p in model.prompts)
    join_prompt = model.prompts[-1][0]["content"][0]["text"]
    assert all(f"part {i}" in join_prompt for i in range(n))


async def test_a_cut_off_window_gives_no_chapter_and_all_cut_off_says_so() -> None:
    ms = moments(12)
    timeline = Timeline("o1", "s3://b/k.mp4", "b", "k.mp4", None, ms)
    n = len(windows(ms, 200))
    cut = '{"summary":"trunc'
    model = ScriptedModel([cut, *[window_reply("ok", ("kept", 20.0, 25.0))] * (n - 1), json.dumps({"summary": "j"})])
    draft = await Summarizer(model, 200, 256, 4).summarize(timeline, "k.mp4")
    assert draft.cut_off == 1 and {c.title for c in draft.chapters} == {"kept"}
    model = ScriptedModel([cut] * n)
    draft = await Summarizer(model, 200, 256, 4).summarize(timeline, "k.mp4")
    assert draft.summary == CUT_OFF and draft.chapters == [] and draft.passes == n


def hit(object_id: str, segment: str, score: float) -> SearchHit:
    return SearchHit(
        object_id=object_id,
        segment_id=segment,
        uri=f"s3://b/{object_id}",
        bucket="b",
        key=object_id,
        start_s=0.0,
        end_s=1.0,
        caption="c",
        score=score,
    )


def test_objects_rank_by_their_best_moment_and_keep_three() -> None:
    hits = [hit("a", "1", 0.9), hit("b", "2", 0.8), *[hit("a", str(i), 0.7 - i / 100) for i in range(3, 7)]]
    hits.append(hit("c", "9", 0.1))
    grouped = group_by_object(hits, k=2)
    assert [o.object_id for o in grouped] == ["a", "b"]
    assert [m.segment_id for m in grouped[0].moments] == ["1", "3", "4"] and grouped[0].score == 0.9
