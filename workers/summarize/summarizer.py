"""``Summarizer``: a timeline in, a summary and chapters out, in as many model calls as the
timeline takes windows (plus one to join their summaries).

Steps:
1. Cut the timeline into windows of at most ``CAPSTREAM_SUMMARIZE_WINDOW_CHARS`` characters
   (``timeline.windows``): one model call each, so a long recording never overflows the
   model's context.
2. Each window: a summary and chapters, times bounded to the window (``prompt``).
3. More than one window: one more call joins the window summaries.
4. Chapters: every window's, sorted and trimmed to the media (``chapters_in_order``).

A window whose reply is cut off at the budget gives no chapter and no summary (nothing
invented); when every window is cut off there is nothing to write, and the summary says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from schemas.summary import Chapter
from workers.caption.backend import CaptionResult
from workers.caption.prompt import ChatMessages
from workers.summarize.prompt import (
    chapters_in_order,
    join_messages,
    parse_join,
    parse_window,
    window_messages,
)
from workers.summarize.timeline import Timeline, window_text, windows

CUT_OFF = "(no summary: every reply was cut off at CAPSTREAM_SUMMARIZE_MAX_TOKENS)"


class Completer(Protocol):
    async def caption(self, messages: ChatMessages) -> CaptionResult: ...


@dataclass
class Draft:
    summary: str
    chapters: list[Chapter]
    passes: int = 0
    cut_off: int = 0  # windows whose reply was not the schema's JSON
    prompt_tokens: int = 0
    completion_tokens: int = 0
    replies: list[str] = field(default_factory=list)


class Summarizer:
    def __init__(self, model: Completer, window_chars: int, max_tokens: int, max_chapters: int) -> None:
        self.model = model
        self.window_chars = window_chars
        self.max_tokens = max_tokens
        self.max_chapters = max_chapters

    async def _ask(self, messages: ChatMessages, draft: Draft) -> str:
        result = await self.model.caption(messages)
        draft.passes += 1
        draft.prompt_tokens += result.prompt_tokens or 0
        draft.completion_tokens += result.completion_tokens or 0
        draft.replies.append(result.text)
        return result.text

    async def summarize(self, timeline: Timeline, name: str) -> Draft:
        draft = Draft(summary="", chapters=[])
        parts: list[tuple[float, float, str]] = []
        chapters: list[Chapter] = []
        for window in windows(timeline.moments, self.window_chars):
            start = min(m.start_s for m in window)
            end = max(m.end_s for m in window)
            text = window_text(window, self.window_chars)
            messages = window_messages(name, text, start, end, self.max_tokens, self.max_chapters)
            reply = parse_window(await self._ask(messages, draft))
            if reply is None:
                draft.cut_off += 1
                continue
            parts.append((start, end, " ".join(reply.summary.split())))
            chapters.extend(reply.chapters)
        if len(parts) > 1:
            joined = parse_join(await self._ask(join_messages(name, parts, self.max_tokens), draft))
            draft.summary = " ".join(joined.summary.split()) if joined else " ".join(p[2] for p in parts)
        else:
            draft.summary = parts[0][2] if parts else CUT_OFF
        draft.chapters = chapters_in_order(chapters, timeline.duration_s)
        return draft
