"""An object's timeline: its indexed moments (captions, transcripts, pages) in time order,
read back from the segments table, and cut into windows that fit one model call."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from workers.index.table import sql_literal

COLUMNS = ["segment_id", "start_s", "end_s", "modality", "page_number", "caption", "uri", "bucket", "key", "version"]


@dataclass(frozen=True)
class TimedText:
    start_s: float
    end_s: float
    modality: str  # visual, speech or page
    text: str
    page_number: int | None = None


@dataclass(frozen=True)
class Timeline:
    object_id: str
    uri: str
    bucket: str | None
    key: str | None
    version: str | None
    moments: list[TimedText]

    @property
    def duration_s(self) -> float:
        return max((m.end_s for m in self.moments), default=0.0)


def read_timeline(table: Any, object_id: str) -> Timeline | None:
    """The object's rows as a timeline, or None when the table has none (sync)."""
    rows: list[dict[str, Any]] = (
        table.search().where(f"object_id = {sql_literal(object_id)}").select(COLUMNS).limit(None).to_list()
    )
    if not rows:
        return None
    moments = sorted(
        (
            TimedText(r["start_s"], r["end_s"], r["modality"] or "visual", r["caption"] or "", r.get("page_number"))
            for r in rows
        ),
        key=lambda m: (m.page_number or 0, m.start_s, m.end_s, m.modality),
    )
    first = rows[0]
    return Timeline(object_id, first["uri"], first["bucket"], first["key"], first["version"], moments)


def clock(seconds: float) -> str:
    minutes, rest = divmod(max(seconds, 0.0), 60)
    return f"{int(minutes)}:{rest:04.1f}"


def line_of(m: TimedText) -> str:
    """One moment as the model reads it: ``[0:05.0–0:10.0] shown: …`` (``said:``, ``page 3:``)."""
    text = " ".join(m.text.split())
    if m.page_number is not None:
        return f"[page {m.page_number}] {text}"
    verb = "said" if m.modality == "speech" else "shown"
    return f"[{clock(m.start_s)}–{clock(m.end_s)}] {verb}: {text}"


def windows(moments: list[TimedText], max_chars: int) -> list[list[TimedText]]:
    """Consecutive runs of moments whose lines total at most ``max_chars`` (a longer single
    line is cut when it is rendered, ``window_text``)."""
    out: list[list[TimedText]] = []
    current: list[TimedText] = []
    used = 0
    for m in moments:
        size = min(len(line_of(m)), max_chars) + 1
        if current and used + size > max_chars:
            out.append(current)
            current, used = [], 0
        current.append(m)
        used += size
    if current:
        out.append(current)
    return out


def window_text(window: list[TimedText], max_chars: int) -> str:
    return "\n".join(line_of(m)[:max_chars] for m in window)
