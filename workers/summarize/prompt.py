"""The summarize prompts and the JSON schemas their replies are decoded under.

A window of the timeline (``workers.summarize.timeline``) is answered with
``{"summary": str, "chapters": [{"title": str, "start_s": number, "end_s": number}]}``. Chapter
times are JSON-schema numbers bounded by the window's start and end with ``multipleOf: 0.1``,
the same guided decoding that keeps a structured caption's event times inside its segment
(``workers.caption.structured``, llguidance), so even a random model cannot place a chapter
outside the media. Order and overlap cannot be said in a schema: ``chapters_in_order`` sorts,
swaps and trims after parsing.

When the timeline takes several windows, each window's summary goes to one more call, which
joins them (``{"summary": str}``); the chapters are the windows' chapters together.

Lengths: every string and list has a bound so that a reply filled to every bound has at
most one character per token of ``CAPSTREAM_SUMMARIZE_MAX_TOKENS`` (the structured
captions' rule): a reply closes before the budget, and one cut off anyway is not trusted.
"""

from __future__ import annotations

import json
import math
from typing import Any, Final

from pydantic import BaseModel, ValidationError

from schemas.summary import Chapter
from workers.caption.prompt import ChatMessages
from workers.caption.structured import RESPONSE_SCHEMA_KEY, TIME_STEP_S
from workers.summarize.timeline import clock

WINDOW_INSTRUCTION: Final = (
    "Here are the timed moments of one media file: what is shown, what is said, or its pages. "
    "Summarize it in a few factual sentences, and divide it into chapters: a short title for each, "
    "with its start and end in seconds, in order."
)
JOIN_INSTRUCTION: Final = (
    "Here are summaries of consecutive parts of one media file, with their times. "
    "Write one summary of the whole file in a few factual sentences."
)
TITLE_CHARS: Final = 60
MIN_SUMMARY_CHARS: Final = 16
_SKELETON: Final = len('{"summary":"","chapters":[]}')
_JOIN_SKELETON: Final = len('{"summary":""}')
_CHAPTER: Final = len('{"title":"","start_s":,"end_s":},')


def _time_chars(end_s: float) -> int:
    return len(f"{end_s:.1f}")


def chapter_budget(max_tokens: int, end_s: float, max_chapters: int) -> tuple[int, int, int]:
    """(chapters, title characters, summary characters) for one window's reply: chapters may
    take half the budget, the summary the rest."""
    title = min(TITLE_CHARS, max(8, max_tokens // 16))
    per_chapter = _CHAPTER + 2 * _time_chars(end_s) + title
    chapters = max(1, min(max_chapters, math.floor(max_tokens / 2 / per_chapter)))
    summary = max(MIN_SUMMARY_CHARS, max_tokens - _SKELETON - chapters * per_chapter)
    return chapters, title, summary


def _time(start_s: float, end_s: float) -> dict[str, Any]:
    lo = math.floor(start_s / TIME_STEP_S) * TIME_STEP_S
    hi = math.ceil(end_s / TIME_STEP_S) * TIME_STEP_S
    return {"type": "number", "minimum": round(lo, 1), "maximum": round(hi, 1), "multipleOf": TIME_STEP_S}


def window_schema(start_s: float, end_s: float, max_tokens: int, max_chapters: int) -> dict[str, Any]:
    chapters, title, summary = chapter_budget(max_tokens, end_s, max_chapters)
    chapter = {
        "type": "object",
        "properties": {
            "title": {"type": "string", "minLength": 1, "maxLength": title},
            "start_s": _time(start_s, end_s),
            "end_s": _time(start_s, end_s),
        },
        "required": ["title", "start_s", "end_s"],
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {
            "summary": {"type": "string", "minLength": 1, "maxLength": summary},
            "chapters": {"type": "array", "items": chapter, "minItems": 1, "maxItems": chapters},
        },
        "required": ["summary", "chapters"],
        "additionalProperties": False,
    }


def join_schema(max_tokens: int) -> dict[str, Any]:
    summary = max(MIN_SUMMARY_CHARS, max_tokens - _JOIN_SKELETON)
    return {
        "type": "object",
        "properties": {"summary": {"type": "string", "minLength": 1, "maxLength": summary}},
        "required": ["summary"],
        "additionalProperties": False,
    }


def window_messages(
    name: str, text: str, start_s: float, end_s: float, max_tokens: int, max_chapters: int
) -> ChatMessages:
    content = f"{WINDOW_INSTRUCTION}\nFile: {name}\n{text}"
    schema = window_schema(start_s, end_s, max_tokens, max_chapters)
    return [{"role": "user", "content": [{"type": "text", "text": content}], RESPONSE_SCHEMA_KEY: schema}]


def join_messages(name: str, parts: list[tuple[float, float, str]], max_tokens: int) -> ChatMessages:
    lines = "\n".join(f"[{clock(a)}–{clock(b)}] {s}" for a, b, s in parts)
    content = f"{JOIN_INSTRUCTION}\nFile: {name}\n{lines}"
    return [
        {"role": "user", "content": [{"type": "text", "text": content}], RESPONSE_SCHEMA_KEY: join_schema(max_tokens)}
    ]


class WindowReply(BaseModel):
    summary: str
    chapters: list[Chapter]


class JoinReply(BaseModel):
    summary: str


def parse_window(text: str) -> WindowReply | None:
    """The model's JSON, or None when it is not the schema's (cut off at the budget)."""
    try:
        return WindowReply.model_validate(json.loads(text))
    except (json.JSONDecodeError, ValidationError):
        return None


def parse_join(text: str) -> JoinReply | None:
    try:
        return JoinReply.model_validate(json.loads(text))
    except (json.JSONDecodeError, ValidationError):
        return None


def chapters_in_order(chapters: list[Chapter], duration_s: float) -> list[Chapter]:
    """Chapters sorted by start, each within ``0..duration_s`` and ending where the next one
    starts at the latest; blank titles and second chapters at one start dropped: what the
    schema cannot promise."""
    by_start: dict[float, Chapter] = {}
    for c in chapters:
        title = " ".join(c.title.split())
        start, end = sorted((min(max(c.start_s, 0.0), duration_s), min(max(c.end_s, 0.0), duration_s)))
        if title and start not in by_start:
            by_start[start] = Chapter(title=title, start_s=start, end_s=end)
    ordered = [by_start[s] for s in sorted(by_start)]
    for i, c in enumerate(ordered):
        following = ordered[i + 1].start_s if i + 1 < len(ordered) else duration_s
        if c.end_s > following or c.end_s <= c.start_s:
            ordered[i] = c.model_copy(update={"end_s": following})
    return ordered
