"""The question for the caption model, and the schema its answer is decoded under.

Each moment is a text block (``[m3] clips/cat.mp4 0:05.0–0:10.0`` with its caption and what was
said) and, where the index holds one, its thumbnail as an image: one frame per moment, already
in the index row, so answering reads nothing from the source. A thumbnail is at most 16 KB
and a few hundred pixels a side: ~15–100 visual tokens per moment (reported per answer as
``visual_tokens``), against ~190–200 per media-second for the caption stage's video input.
Re-reading the source at the segment's times would show the model more, at the price of an
S3 read and a decode per moment in the request path; that is not built.

The answer is JSON: ``{"answer": str, "found": bool, "citations": ["m1", ...]}``. The
citations are an ``enum`` of the ids of the moments given, so guided decoding cannot name a
moment that was not retrieved. The answer's ``maxLength`` leaves room in the token budget for
the rest of the JSON (one character per token at worst, as for structured captions), so a
reply closes before the budget; a reply that is cut off anyway keeps no citation.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Final

from pydantic import BaseModel, ValidationError

from workers.ask.protocol import Moment
from workers.caption.prompt import ChatMessages
from workers.caption.structured import RESPONSE_SCHEMA_KEY

INSTRUCTION: Final = (
    "Answer the question from these moments of the media only. Cite the ids of the moments that "
    "hold the answer. If they do not hold it, say so, set found to false and cite none."
)
# Compact JSON around the answer: {"answer":"","found":false,"citations":[]} and per citation "m12",
_SKELETON_CHARS: Final = len('{"answer":"","found":false,"citations":[]}')
_CITATION_CHARS: Final = len('"m20",')
MIN_ANSWER_CHARS: Final = 16


def clock(seconds: float) -> str:
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}:{rest:04.1f}"


def moment_block(m: Moment, name: str) -> str:
    if m.page_number is not None:
        where = f"{name} page {m.page_number}"
    else:
        where = f"{name} {clock(m.start_s)}–{clock(m.end_s)}"
    lines = [f"[{m.id}] {where}"]
    lines.append(f"said: {m.text}" if m.modality == "speech" else f"shown: {m.text}")
    if m.said:
        lines.append(f"said: {m.said}")
    return "\n".join(lines)


def answer_schema(moment_ids: list[str], max_tokens: int) -> dict[str, Any]:
    room = max_tokens - _SKELETON_CHARS - _CITATION_CHARS * len(moment_ids)
    return {
        "type": "object",
        "properties": {
            "answer": {"type": "string", "minLength": 1, "maxLength": max(room, MIN_ANSWER_CHARS)},
            "found": {"type": "boolean"},
            "citations": {"type": "array", "items": {"enum": moment_ids}, "maxItems": len(moment_ids)},
        },
        "required": ["answer", "found", "citations"],
        "additionalProperties": False,
    }


def build_ask_messages(
    question: str, moments: list[Moment], names: dict[str, str], frames: dict[str, bytes], max_tokens: int
) -> ChatMessages:
    """``names``: moment id -> how the media is named (its key); ``frames``: moment id -> JPEG."""
    content: list[dict[str, Any]] = [{"type": "text", "text": INSTRUCTION}]
    for m in moments:
        content.append({"type": "text", "text": moment_block(m, names.get(m.id, m.object_id))})
        if jpeg := frames.get(m.id):
            url = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()
            content.append({"type": "image_url", "image_url": {"url": url}})
    content.append({"type": "text", "text": f"Question: {question}"})
    schema = answer_schema([m.id for m in moments], max_tokens)
    return [{"role": "user", "content": content, RESPONSE_SCHEMA_KEY: schema}]


class ModelAnswer(BaseModel):
    answer: str
    found: bool
    citations: list[str]


def parse_answer(text: str, moment_ids: list[str]) -> ModelAnswer | None:
    """The model's JSON, citations kept only if they name given moments (once each, in order);
    None when it is not the schema's JSON (cut off at the budget)."""
    try:
        raw = ModelAnswer.model_validate(json.loads(text))
    except (json.JSONDecodeError, ValidationError):
        return None
    given = set(moment_ids)
    cited = [c for c in dict.fromkeys(raw.citations) if c in given]
    return raw.model_copy(update={"citations": cited})
