"""``Answerer``: one question in, an answer with cited moments out.

Steps:
1. Cut the question to ``CAPSTREAM_ASK_MAX_QUESTION_CHARS`` (said in the answer).
2. Retrieve ``CAPSTREAM_ASK_K`` moments with the search (hybrid, the caller's collections,
   the request's object/bucket/prefix); a caption and what was said then are one moment.
3. Read each moment's thumbnail from the index (one query), up to the caption engine's images
   per prompt.
4. Ask the caption model (the caption stage's model and backend: an in-process engine on the
   process's engine thread, or its ``vllm serve``) under the answer schema
   (``workers.ask.prompt``).
5. Keep only citations of given moments; a reply that is not the schema's JSON (cut off at the
   budget) keeps none.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor
from typing import Any

import structlog

from workers.ask.prompt import build_ask_messages, parse_answer
from workers.ask.protocol import Answer, AskRequest, Moment, Timings
from workers.caption.backend import CaptionBackend, make_caption_backend
from workers.caption.prompt import ChatMessages
from workers.index.table import sql_literal
from workers.search.query import SearchHit, SearchQuery
from workers.search.searcher import Searcher
from workers.settings import CaptionSettings, SearchSettings

log = structlog.get_logger("capstream.ask")

NOTHING_FOUND = "No indexed moment matches the question."
CUT_OFF = "The answer was cut off at the token budget (CAPSTREAM_ASK_MAX_TOKENS); no citation is kept."


def moment_of(index: int, hit: SearchHit) -> Moment:
    said = next((a.text for a in hit.also if a.modality == "speech"), None) if hit.modality != "speech" else None
    return Moment(
        id=f"m{index + 1}",
        object_id=hit.object_id,
        segment_id=hit.segment_id,
        uri=hit.uri,
        start_s=hit.start_s,
        end_s=hit.end_s,
        modality=hit.modality,
        page_number=hit.page_number,
        text=hit.caption,
        said=said,
    )


class Answerer:
    def __init__(
        self,
        settings: SearchSettings,
        searcher: Searcher,
        engine_executor: Executor | None = None,
        backend: CaptionBackend | None = None,
    ) -> None:
        self.settings = settings
        self.searcher = searcher
        caption = CaptionSettings()
        self.caption = caption.model_copy(update={"caption_structured_max_tokens": settings.ask_max_tokens})
        self._backend = backend
        self._executor = engine_executor
        self._started = False
        self._lock = asyncio.Lock()

    async def _model(self) -> CaptionBackend:
        """Started on the first question: a server that is never asked never loads the model."""
        async with self._lock:
            if self._backend is None:
                self._backend = make_caption_backend(self.caption, self._executor)
            if not self._started:
                await self._backend.start()
                self._started = True
            return self._backend

    async def close(self) -> None:
        if self._backend is not None and self._started:
            await self._backend.close()
            self._started = False

    async def retrieve(self, request: AskRequest, collections: list[str] | None) -> tuple[str, bool, list[Moment]]:
        question = request.question.strip()
        limit = self.settings.ask_max_question_chars
        truncated = len(question) > limit
        question = question[:limit]
        query = SearchQuery(
            q=question,
            k=request.k or self.settings.ask_k,
            object_id=request.object_id,
            bucket=request.bucket,
            prefix=request.prefix,
            collections=collections,
        )
        result = await self.searcher.search(query)
        return question, truncated, [moment_of(i, h) for i, h in enumerate(result.hits)]

    def _frames(self, moments: list[Moment]) -> dict[str, bytes]:
        visual = [m for m in moments if m.modality != "speech"][: self.caption.caption_max_images]
        table = self.searcher.open_table() if visual else None
        if table is None:
            return {}
        ids = ", ".join(sql_literal(m.segment_id) for m in visual)
        rows: list[dict[str, Any]] = (
            table.search()
            .where(f"segment_id IN ({ids})")
            .select(["segment_id", "thumbnail"])
            .limit(len(visual))
            .to_list()
        )
        jpeg = {r["segment_id"]: r["thumbnail"] for r in rows if r.get("thumbnail")}
        return {m.id: jpeg[m.segment_id] for m in visual if m.segment_id in jpeg}

    async def prompt(self, question: str, moments: list[Moment]) -> tuple[ChatMessages, list[Moment], dict[str, bytes]]:
        """The request for the model (steps 3-4), the moments as shown, and their frames."""
        frames = await asyncio.to_thread(self._frames, moments)
        shown = [m.model_copy(update={"with_frame": m.id in frames}) for m in moments]
        names = {m.id: m.uri.rsplit("/", 1)[-1] or m.uri for m in shown}
        return build_ask_messages(question, shown, names, frames, self.settings.ask_max_tokens), shown, frames

    async def answer(
        self,
        request: AskRequest,
        collections: list[str] | None = None,
        moments: tuple[str, bool, list[Moment]] | None = None,
    ) -> Answer:
        """``moments``: what ``retrieve`` returned, when the caller already sent them on (SSE)."""
        started = time.perf_counter()
        question, truncated, found = moments or await self.retrieve(request, collections)
        retrieval_ms = (time.perf_counter() - started) * 1000
        if not found:
            return Answer(
                question=question,
                question_truncated=truncated,
                answer=NOTHING_FOUND,
                found=False,
                citations=[],
                moments=[],
                notice=NOTHING_FOUND,
                timings=Timings(retrieval_ms=round(retrieval_ms, 1), model_ms=0.0),
            )
        messages, shown, frames = await self.prompt(question, found)
        model = await self._model()
        asked = time.perf_counter()
        result = await model.caption(messages)
        model_ms = (time.perf_counter() - asked) * 1000
        parsed = parse_answer(result.text, [m.id for m in shown])
        by_id = {m.id: m for m in shown}
        answer = Answer(
            question=question,
            question_truncated=truncated,
            answer=parsed.answer if parsed else result.text,
            found=bool(parsed and parsed.found),
            citations=[by_id[c] for c in parsed.citations] if parsed else [],
            moments=shown,
            cut_off=parsed is None,
            notice=CUT_OFF if parsed is None else None,
            timings=Timings(
                retrieval_ms=round(retrieval_ms, 1),
                model_ms=round(model_ms, 1),
                visual_tokens=result.visual_tokens,
                prompt_tokens=result.prompt_tokens,
                completion_tokens=result.completion_tokens,
            ),
        )
        log.info(
            "ask",
            moments=len(shown),
            frames=len(frames),
            citations=len(answer.citations),
            cut_off=answer.cut_off,
            **answer.timings.model_dump(),
        )
        return answer
