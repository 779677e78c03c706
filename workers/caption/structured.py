"""Structured captions (``CAPSTREAM_CAPTION_FORMAT=structured``): the JSON schema one segment's
caption is decoded under, reading the model's JSON back, and the text search sees.

The schema is per segment: each event time is a JSON-schema number with the segment's start
and end as ``minimum``/``maximum`` and ``multipleOf: 0.1`` (the resolution of the ``<t
seconds>`` markers the model reads, and a bound on its digits), so even a random model cannot
write a time outside the segment. vLLM 0.32 runs it on the ``guidance`` backend
(llguidance 1.7), pinned with compact JSON (``STRUCTURED_OUTPUTS_CONFIG``): measured here, it
builds a matcher for one of these schemas in ~10 ms and enforces minimum, maximum and
multipleOf; xgrammar 0.2.8 also enforces the bounds but recompiled this schema for every
segment (the bounds change) in 0.3-1.1 s, and rejects multipleOf. Unbounded whitespace
(the backends' default) let a random model pad the JSON until the token limit. What a schema
cannot say is fixed after parsing: an event ending before it starts is swapped, and times
are clamped to the segment again (a caption from another producer, a replaced backend).

Every string and list has a length bound derived from
``CAPSTREAM_CAPTION_STRUCTURED_MAX_TOKENS`` (``StructureLimits``): a JSON filled to every
bound has at most one character per token of the budget. A token is at least one byte, so
ASCII cannot take more tokens than that; CJK text takes about one token per character and
English prose a quarter. The tiny random model, which fills every string to its bound with
rare multi-byte characters, wrote 1.5 characters per token. So the JSON closes before the
token limit and a real caption rarely meets a bound; a reply cut off anyway is kept as plain
text (``structure`` null) rather than lost.

The caption's ``text`` (what the embed stage embeds and the index's BM25 column holds) is
rendered from the structure, on-screen text and timed events included, so they are searchable
without a second text column or an index migration; the structure rides alongside for
consumers that want the fields.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Final

from pydantic import ValidationError

from schemas.captions import CaptionStructure
from workers.caption.prompt import ChatMessages

RESPONSE_SCHEMA_KEY: Final = "capstream_response_schema"
SCHEMA_NAME: Final = "segment_caption"
STRUCTURED_OUTPUTS_CONFIG: Final = {"backend": "guidance", "disable_any_whitespace": True}
TIME_STEP_S: Final = 0.1
CHARS_PER_TOKEN: Final = 1.0
REFERENCE_TOKENS: Final = 2048  # the budget at which the lists reach their full counts
LIST_FIELDS: Final = ("objects", "actions", "text_on_screen", "events")
# Items per list at the reference budget, and each field's share of the string characters.
FULL_COUNTS: Final = {"objects": 10, "actions": 6, "text_on_screen": 8, "events": 5}
SHARES: Final = {"summary": 0.18, "objects": 0.14, "actions": 0.18, "text_on_screen": 0.30, "events": 0.20}
MIN_CHARS: Final = 4
# Compact JSON around the strings: the skeleton, then per string item and per event.
SKELETON_CHARS: Final = len('{"summary":"","objects":[],"actions":[],"text_on_screen":[],"events":[]}')
ITEM_CHARS: Final = len('"",')
EVENT_CHARS: Final = len('{"start_s":,"end_s":,"description":""},')


@dataclass(frozen=True)
class StructureLimits:
    """Items per list and characters per string of a structured caption."""

    counts: dict[str, int]
    chars: dict[str, int]

    @classmethod
    def for_tokens(cls, max_tokens: int, time_chars: int) -> StructureLimits:
        """Bounds whose filled-to-the-limit JSON fits ``max_tokens`` at ``CHARS_PER_TOKEN``;
        ``time_chars``: the widest event time as written (``1234.5``)."""
        scale = min(1.0, max_tokens / REFERENCE_TOKENS)
        counts = {f: max(1, math.floor(n * scale)) for f, n in FULL_COUNTS.items()}
        overhead = (
            SKELETON_CHARS
            + ITEM_CHARS * sum(counts[f] for f in LIST_FIELDS if f != "events")
            + (EVENT_CHARS + 2 * time_chars) * counts["events"]
        )
        room = max_tokens * CHARS_PER_TOKEN - overhead
        chars = {f: max(MIN_CHARS, math.floor(room * share / counts.get(f, 1))) for f, share in SHARES.items()}
        return cls(counts, chars)


def _strings(items: int, chars: int) -> dict[str, Any]:
    return {"type": "array", "maxItems": items, "items": {"type": "string", "maxLength": chars}}


def time_bounds(start_s: float, end_s: float) -> tuple[float, float] | None:
    """The segment rounded inward to ``TIME_STEP_S``; None when no step lies inside it."""
    low = math.ceil(round(start_s / TIME_STEP_S, 6)) * TIME_STEP_S
    high = math.floor(round(end_s / TIME_STEP_S, 6)) * TIME_STEP_S
    return (round(low, 1), round(high, 1)) if low < high else None


def response_schema(start_s: float, end_s: float, max_tokens: int) -> dict[str, Any]:
    """The JSON schema of one segment's caption; a segment without duration (a still) has no events."""
    bounds = time_bounds(start_s, end_s)
    low, high = bounds or (0.0, 0.0)
    limits = StructureLimits.for_tokens(max_tokens, time_chars=len(f"{high:.1f}"))
    time = {"type": "number", "minimum": low, "maximum": high, "multipleOf": TIME_STEP_S}
    event = {
        "type": "object",
        "properties": {
            "start_s": time,
            "end_s": time,
            "description": {"type": "string", "maxLength": limits.chars["events"]},
        },
        "required": ["start_s", "end_s", "description"],
        "additionalProperties": False,
    }
    c, n = limits.chars, limits.counts
    return {
        "type": "object",
        "properties": {
            "summary": {"type": "string", "maxLength": c["summary"]},
            "objects": _strings(n["objects"], c["objects"]),
            "actions": _strings(n["actions"], c["actions"]),
            "text_on_screen": _strings(n["text_on_screen"], c["text_on_screen"]),
            "events": {"type": "array", "maxItems": n["events"] if bounds else 0, "items": event},
        },
        "required": ["summary", "objects", "actions", "text_on_screen", "events"],
        "additionalProperties": False,
    }


def instruction(start_s: float, end_s: float) -> str:
    return (
        "Answer in JSON: summary (the description), objects (the things visible), actions (what is being done), "
        "text_on_screen (every piece of visible text, verbatim) and events (what happens when: start_s and end_s "
        f"in seconds between {start_s:.1f} and {end_s:.1f}, and a description)."
    )


def with_response_schema(messages: ChatMessages, start_s: float, end_s: float, max_tokens: int) -> ChatMessages:
    """The caption request asking for a structured caption of the segment ``start_s``-``end_s``.

    The schema rides on the last message under ``RESPONSE_SCHEMA_KEY`` (one list of messages
    per request, as for the video metadata); the backends take it out with
    ``split_response_schema`` and send it the way their API takes it.
    """
    *head, last = messages
    content = [*last["content"], {"type": "text", "text": instruction(start_s, end_s)}]
    schema = response_schema(start_s, end_s, max_tokens)
    return [*head, {**last, "content": content, RESPONSE_SCHEMA_KEY: schema}]


def split_response_schema(messages: ChatMessages) -> tuple[ChatMessages, dict[str, Any] | None]:
    """The messages as the API takes them, and the JSON schema the reply must follow (if any)."""
    schemas = [m[RESPONSE_SCHEMA_KEY] for m in messages if RESPONSE_SCHEMA_KEY in m]
    if not schemas:
        return messages, None
    clean = [{k: v for k, v in m.items() if k != RESPONSE_SCHEMA_KEY} for m in messages]
    return clean, schemas[-1]


def openai_response_format(schema: dict[str, Any]) -> dict[str, Any]:
    """``response_format`` of a chat completion: vLLM's server turns it into structured outputs."""
    return {"type": "json_schema", "json_schema": {"name": SCHEMA_NAME, "schema": schema, "strict": True}}


def parse_structure(text: str, start_s: float, end_s: float) -> CaptionStructure | None:
    """The model's JSON as a structure with its events inside ``start_s``-``end_s``, or None if
    it is not the schema's JSON (cut off at the token limit, or decoded without a grammar)."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(raw, dict):
        return None
    raw["events"] = [_clamped(e, start_s, end_s) for e in raw.get("events") or [] if isinstance(e, dict)]
    for field in LIST_FIELDS[:-1]:
        if isinstance(raw.get(field), list):
            raw[field] = [s.strip() for s in raw[field] if isinstance(s, str) and s.strip()]
    try:
        return CaptionStructure.model_validate(raw)
    except ValidationError:
        return None


def _clamped(event: dict[str, Any], start_s: float, end_s: float) -> dict[str, Any]:
    times = []
    for key in ("start_s", "end_s"):
        value = event.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            value = start_s
        times.append(min(max(float(value), start_s), end_s))
    low, high = sorted(times)
    return {**event, "start_s": low, "end_s": high}


def render_text(structure: CaptionStructure) -> str:
    """The caption's text: every field in words (and times), for the embedding and BM25."""
    lines = [structure.summary.strip()]
    if structure.objects:
        lines.append("Objects: " + ", ".join(structure.objects) + ".")
    if structure.actions:
        lines.append("Actions: " + "; ".join(structure.actions) + ".")
    if structure.text_on_screen:
        lines.append("Text on screen: " + "; ".join(f'"{t}"' for t in structure.text_on_screen) + ".")
    for event in structure.events:
        lines.append(f"{event.start_s:.1f}-{event.end_s:.1f}s: {event.description.strip()}")
    return "\n".join(line for line in lines if line)
