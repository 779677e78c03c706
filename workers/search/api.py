"""``capstream serve``: the search API and its one page (FastAPI; protocol models here, next
to the routes that serve them).

- ``GET /search?q=&k=&mode=&bucket=&prefix=&object_id=&per_object=&modality=&merge=&cursor=``: hits (the shape of
  ``capstream search --json``, plus a thumbnail URL and a presigned media link that opens at
  the segment, ``#t=start,end``), and whether the query was truncated.
- ``POST /ask`` (an ``AskRequest``): server-sent events, the retrieved moments and then an
  answer that cites them (``workers.ask``).
- ``GET /search/objects?q=&k=&mode=&bucket=&prefix=&modality=``: whole objects ranked by their
  best moments, each with its summary and chapters (``workers.search.objects``).
- ``GET /objects/{object_id}``: progress (Redis), the object's indexed segments (table) and its
  summary with chapters (links that open the media at each chapter's start).
- ``GET /thumbnails/{segment_id}``: the segment's JPEG thumbnail.
- ``GET /healthz`` (no key needed: status, row count, whether keys are required);
  ``GET /openapi.json``; ``GET /``: the page (a static shell that asks for a key).

Every route but ``/healthz`` and the page needs an API key (``workers.search.auth``) and sees
only the key's collections: search filters on them inside the store, another collection's
object or thumbnail is a 404.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import datetime
from importlib.resources import files
from typing import Annotated, Any

import structlog
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.middleware.trustedhost import TrustedHostMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from schemas.embeddings import Modality
from schemas.summary import Chapter, ObjectSummary
from workers.access.api_keys import ApiKeyStore
from workers.access.collections import s3_parts
from workers.ask.answerer import Answerer
from workers.ask.protocol import Answer, AskRequest, Moment
from workers.index.table import sql_literal
from workers.runtime.continuous import engine_thread
from workers.runtime.outbound import public_uri
from workers.s3_client import s3_client
from workers.search.auth import Authenticator, Authorized, Caller, is_loopback
from workers.search.cursors import CursorGone, CursorMismatch, CursorStore, SearchCursor, fingerprint
from workers.search.objects import ObjectHit
from workers.search.query import Mode, SearchHit, SearchQuery
from workers.search.searcher import Searcher
from workers.settings import SearchSettings, comma_list
from workers.state.keys import RedisKeys
from workers.state.object_report import object_report

log = structlog.get_logger(__name__)


class Hit(SearchHit):
    thumbnail_url: str
    media_url: str | None  # presigned GET of s3://bucket/key, with #t=start,end


def as_hit(hit: SearchHit, media_url: str | None) -> Hit:
    """A hit as a caller sees it: its source without secrets, its thumbnail and media links."""
    return Hit(
        **(hit.model_dump() | {"uri": public_uri(hit.uri)}),
        thumbnail_url=f"/thumbnails/{hit.segment_id}",
        media_url=media_url,
    )


class SearchResponse(BaseModel):
    query: str
    mode: Mode | None
    truncated: bool
    notice: str | None
    took_ms: float
    hits: list[Hit]
    next_cursor: str | None = None  # the next page: the same request plus cursor=; None: no more


FILTER_MAX_CHARS = 1024  # bucket names are <= 63, keys <= 1024 bytes (S3); object ids are UUIDs


class IndexedSegment(BaseModel):
    segment_id: str
    segment_index: int
    start_s: float
    end_s: float
    caption: str
    caption_model: str
    embedding_model: str


class LinkedChapter(Chapter):
    media_url: str | None = None  # presigned GET that opens the media at the chapter's start


class Summary(BaseModel):
    summary: str
    chapters: list[LinkedChapter]
    duration_s: float
    model: str
    summarized_at: datetime


class ObjectResponse(BaseModel):
    object_id: str
    progress: dict[str, Any] | None  # as `capstream results --json`; None if Redis has none
    progress_error: str | None = None  # Redis unreachable
    indexed: list[IndexedSegment]
    summary: Summary | None = None  # None until the summarize stage wrote one


class ObjectSearchHit(ObjectHit):
    chapters: list[LinkedChapter]  # type: ignore[assignment]
    moments: list[Hit]  # type: ignore[assignment]


class ObjectSearchResponse(BaseModel):
    query: str
    mode: Mode | None
    truncated: bool
    notice: str | None
    took_ms: float
    hits: list[ObjectSearchHit]


class Health(BaseModel):
    status: str
    indexed_rows: int | None
    auth: bool  # False: --no-auth, every caller sees everything


class App:
    """What the routes share: the searcher, Redis and the S3 client for media links."""

    def __init__(self, settings: SearchSettings, searcher: Searcher, answerer: Answerer) -> None:
        self.settings = settings
        self.searcher = searcher
        self.answerer = answerer
        self.redis: Redis | None = None
        self.cursors: CursorStore | None = None
        self.s3: Any = None

    async def media_url(self, hit: SearchHit) -> str | None:
        return await self.link(hit.uri, hit.start_s, hit.end_s, hit.page_number)

    async def link(self, uri: str, start_s: float, end_s: float, page_number: int | None = None) -> str | None:
        """A presigned link that opens an S3 object at ``start_s``-``end_s``, or a document at
        its page (``#page=N``, which PDF viewers follow); None for other sources."""
        bucket, key = s3_parts(uri)
        if self.s3 is None or not (bucket and key):
            return None
        url: str = await self.s3.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=self.settings.search_presign_expiry_s
        )
        return f"{url}#page={page_number}" if page_number is not None else f"{url}#t={start_s:.3f},{end_s:.3f}"

    async def linked(self, moments: list[Moment]) -> list[Moment]:
        """Moments as a caller may see them: a link each, source URIs without secrets."""
        links = await asyncio.gather(*(self.link(m.uri, m.start_s, m.end_s, m.page_number) for m in moments))
        return [
            m.model_copy(update={"media_url": url, "uri": public_uri(m.uri)})
            for m, url in zip(moments, links, strict=True)
        ]

    def rows(self, where: str, columns: list[str], limit: int, caller: Caller) -> list[dict[str, Any]]:
        """Rows matching ``where`` in the caller's collections."""
        table = self.searcher.open_table()
        if table is None:
            return []
        if caller.collections is not None:
            if "collection" in table.schema.names:
                scope = f"collection IN ({', '.join(sql_literal(c) for c in caller.collections)})"
                where = f"({where}) AND {scope}"
            elif "default" not in caller.collections:
                return []  # a table from before collections: every row is the default collection's
        rows: list[dict[str, Any]] = table.search().where(where).select(columns).limit(limit).to_list()
        return rows

    async def chapters(self, uri: str, chapters: list[Chapter], duration_s: float) -> list[LinkedChapter]:
        links = await asyncio.gather(*(self.link(uri, c.start_s, c.end_s or duration_s) for c in chapters))
        return [LinkedChapter(**c.model_dump(), media_url=url) for c, url in zip(chapters, links, strict=True)]

    async def summary(self, found: ObjectSummary) -> Summary:
        return Summary(
            summary=found.summary,
            chapters=await self.chapters(found.uri, found.chapters, found.duration_s),
            duration_s=found.duration_s,
            model=found.model,
            summarized_at=found.summarized_at,
        )

    def source_collection(self, source_uri: str) -> str | None:
        """The collection of an object that may not be indexed yet, from its source's rules."""
        return self.settings.collection_rules().of_uri(source_uri)


def _segment_id(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise HTTPException(status_code=404, detail="no such segment") from None


def create_app(settings: SearchSettings | None = None, searcher: Searcher | None = None) -> FastAPI:
    settings = settings or SearchSettings()
    if not settings.serve_auth and not is_loopback(settings.serve_host):
        raise ValueError(f"--no-auth is only for a loopback address, not {settings.serve_host}")
    # One thread for the in-process engines (query embedder, answering model): two vLLM
    # engines must never step at the same time.
    engines = engine_thread("serve-engines")
    searcher = searcher or Searcher(settings, engine_executor=engines)
    state = App(settings, searcher, Answerer(settings, searcher, engines))
    authenticator = Authenticator(settings.serve_auth, settings.serve_rate_limit_per_min)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            await state.searcher.start()
            stack.push_async_callback(state.searcher.close)
            stack.push_async_callback(state.answerer.close)
            stack.callback(engines.shutdown, wait=False, cancel_futures=True)
            state.redis = Redis.from_url(settings.redis_url)
            stack.push_async_callback(state.redis.aclose)
            authenticator.store = ApiKeyStore(state.redis, RedisKeys(settings.key_prefix))
            state.cursors = CursorStore(state.redis, RedisKeys(settings.key_prefix), settings.search_cursor_ttl_s)
            # Links are signed for the host a browser will ask (the signature covers it).
            public = settings.search_public_s3_endpoint_url or settings.s3_endpoint_url
            state.s3 = await stack.enter_async_context(
                s3_client(settings.model_copy(update={"s3_endpoint_url": public}))
            )
            if settings.serve_auth:
                log.info("serve.ready", index=settings.index_uri, table=settings.index_table, auth=True)
            else:
                log.warning("serve.ready.NO_AUTH", index=settings.index_uri, auth=False, host=settings.serve_host)
            yield

    app = FastAPI(
        title="capstream search", version="1", lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None
    )
    app.state.authenticator = authenticator
    # DNS rebinding: a page on another site whose name resolves to 127.0.0.1 must not reach
    # the API with its own Host header.
    hosts = list(comma_list(settings.serve_allowed_hosts)) or (
        ["127.0.0.1", "localhost", "[::1]", "::1"] if is_loopback(settings.serve_host) else ["*"]
    )
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=hosts)
    if origins := comma_list(settings.serve_cors_origins):
        app.add_middleware(
            CORSMiddleware, allow_origins=list(origins), allow_methods=["GET"], allow_headers=["Authorization"]
        )

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi(_: Authorized) -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/search", response_model=SearchResponse)
    async def search(
        caller: Authorized,
        q: Annotated[str, Query(description="what to look for")] = "",
        k: Annotated[int | None, Query(ge=1, le=200)] = None,
        mode: Mode | None = None,
        bucket: Annotated[str | None, Query(max_length=FILTER_MAX_CHARS)] = None,
        prefix: Annotated[str | None, Query(max_length=FILTER_MAX_CHARS)] = None,
        object_id: Annotated[str | None, Query(max_length=FILTER_MAX_CHARS)] = None,
        per_object: Annotated[int | None, Query(ge=0)] = None,
        modality: Modality | None = None,
        merge: bool = True,
        cursor: Annotated[str | None, Query(max_length=64, description="next_cursor of the previous page")] = None,
    ) -> SearchResponse:
        if len(q) > settings.search_max_query_chars:
            raise HTTPException(
                status_code=422, detail=f"q is longer than {settings.search_max_query_chars} characters"
            )
        try:
            query = SearchQuery(
                q=q,
                k=k or settings.search_k,
                mode=mode or settings.search_mode,
                bucket=bucket or None,
                prefix=prefix or None,
                object_id=object_id or None,
                per_object=settings.search_per_object if per_object is None else per_object,
                modality=modality,
                merge=merge,
                collections=caller.collections,
            )
        except ValidationError as exc:
            raise HTTPException(status_code=422, detail=str(exc.errors()[0]["msg"])) from None
        key_id = caller.key.key_id if caller.key else None
        assert state.cursors is not None
        shown: list[str] = []
        version = None
        if cursor:
            try:
                previous = await state.cursors.load(cursor, key_id, query)
            except CursorGone as exc:
                raise HTTPException(status_code=410, detail=str(exc)) from None
            except CursorMismatch as exc:
                raise HTTPException(status_code=422, detail=str(exc)) from None
            shown, version = previous.shown, previous.version
        if len(shown) + query.k > settings.search_max_depth:
            raise HTTPException(
                status_code=422, detail=f"cursor: a query pages through at most {settings.search_max_depth} hits"
            )
        try:
            result = await state.searcher.search(query, version=version, exclude=frozenset(shown))
        except (ValueError, OSError) as exc:  # the pinned version was compacted away
            if version is None:
                raise
            raise HTTPException(status_code=410, detail=f"the cursor's index version is gone: {exc}") from None
        next_cursor = None
        if len(result.hits) == query.k and result.version is not None:
            now_shown = (
                shown + [h.segment_id for h in result.hits] + [a.segment_id for h in result.hits for a in h.also]
            )
            next_cursor = await state.cursors.save(
                SearchCursor(key_id=key_id, fingerprint=fingerprint(query), version=result.version, shown=now_shown)
            )
        links = await asyncio.gather(*(state.media_url(h) for h in result.hits))
        return SearchResponse(
            query=result.query,
            mode=result.mode,
            truncated=result.truncated,
            notice=result.notice,
            took_ms=result.took_ms,
            hits=[as_hit(h, link) for h, link in zip(result.hits, links, strict=True)],
            next_cursor=next_cursor,
        )

    @app.get("/search/objects", response_model=ObjectSearchResponse)
    async def search_objects(
        caller: Authorized,
        q: Annotated[str, Query(description="what to look for")] = "",
        k: Annotated[int | None, Query(ge=1, le=50)] = None,
        mode: Mode | None = None,
        bucket: Annotated[str | None, Query(max_length=FILTER_MAX_CHARS)] = None,
        prefix: Annotated[str | None, Query(max_length=FILTER_MAX_CHARS)] = None,
        modality: Modality | None = None,
    ) -> ObjectSearchResponse:
        """Whole objects ranked by their best moments, with summaries and chapters."""
        if len(q) > settings.search_max_query_chars:
            raise HTTPException(
                status_code=422, detail=f"q is longer than {settings.search_max_query_chars} characters"
            )
        try:
            query = SearchQuery(
                q=q,
                k=k or settings.search_k,
                mode=mode or settings.search_mode,
                bucket=bucket or None,
                prefix=prefix or None,
                modality=modality,
                collections=caller.collections,
            )
        except ValidationError as exc:
            raise HTTPException(status_code=422, detail=str(exc.errors()[0]["msg"])) from None
        result = await state.searcher.search_objects(query)
        hits = []
        for h in result.hits:
            links = await asyncio.gather(*(state.media_url(m) for m in h.moments))
            moments = [as_hit(m, u) for m, u in zip(h.moments, links, strict=True)]
            chapters = await state.chapters(h.uri, h.chapters, h.duration_s or 0.0)
            hits.append(
                ObjectSearchHit(
                    **(h.model_dump(exclude={"moments", "chapters"}) | {"uri": public_uri(h.uri)}),
                    chapters=chapters,
                    moments=moments,
                )
            )
        return ObjectSearchResponse(
            query=result.query,
            mode=result.mode,
            truncated=result.truncated,
            notice=result.notice,
            took_ms=result.took_ms,
            hits=hits,
        )

    @app.post(
        "/ask",
        response_class=StreamingResponse,
        # The schema is the `answer` event's data (the stream itself is text/event-stream).
        responses={
            200: {
                "model": Answer,
                "content": {"text/event-stream": {}},
                "description": "events: moments, then answer (this schema), then done; or error",
            }
        },
    )
    async def ask(body: AskRequest, caller: Authorized) -> StreamingResponse:
        """Server-sent events: ``moments`` (what was retrieved, with links) as soon as the
        search is done, ``answer`` (an ``Answer``) when the model is, then ``done``; a failure
        after the stream started is an ``error`` event."""
        if not body.question.strip():
            raise HTTPException(status_code=422, detail="question: empty")
        if body.object_id is not None:
            oid = body.object_id
            found = await asyncio.to_thread(state.rows, f"object_id = {sql_literal(oid)}", ["object_id"], 1, caller)
            if not found:
                raise HTTPException(status_code=404, detail="no such object")

        async def events() -> AsyncIterator[str]:
            try:
                question, truncated, moments = await state.answerer.retrieve(body, caller.collections)
                yield sse(
                    "moments",
                    {
                        "question": question,
                        "question_truncated": truncated,
                        "moments": [m.model_dump(mode="json") for m in await state.linked(moments)],
                    },
                )
                answer = await state.answerer.answer(body, caller.collections, (question, truncated, moments))
                shown = {m.id: m for m in await state.linked(answer.moments)}
                answer = answer.model_copy(
                    update={"moments": list(shown.values()), "citations": [shown[c.id] for c in answer.citations]}
                )
                yield sse("answer", answer.model_dump(mode="json"))
                yield sse("done", {})
            except Exception as exc:  # the status line is gone: say it in the stream
                log.error("ask_failed", error=f"{type(exc).__name__}: {exc}")
                yield sse("error", {"detail": f"{type(exc).__name__}: {exc}"})

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})

    @app.get("/objects/{object_id}", response_model=ObjectResponse)
    async def get_object(object_id: str, caller: Authorized) -> ObjectResponse:
        progress, error = None, None
        try:
            assert state.redis is not None
            progress = await object_report(state.redis, settings, object_id)
        except RedisError as exc:
            error = f"progress unavailable: {type(exc).__name__}"
        columns = list(IndexedSegment.model_fields)
        rows = await asyncio.to_thread(state.rows, f"object_id = {sql_literal(object_id)}", columns, 100_000, caller)
        if progress is not None:
            progress["source_uri"] = public_uri(progress["source_uri"])
        if progress is not None and not rows and not caller.may_see(state.source_collection(progress["source_uri"])):
            progress = None  # another collection's object: answered as one that does not exist
        if progress is None and error is None and not rows:
            raise HTTPException(status_code=404, detail="no such object")
        indexed = sorted((IndexedSegment(**{c: r[c] for c in columns}) for r in rows), key=lambda s: s.segment_index)
        found = (await asyncio.to_thread(state.searcher.summaries, [object_id], caller.collections)).get(object_id)
        return ObjectResponse(
            object_id=object_id,
            progress=progress,
            progress_error=error,
            indexed=indexed,
            summary=await state.summary(found) if found is not None and rows else None,
        )

    @app.get("/thumbnails/{segment_id}", response_class=Response)
    async def thumbnail(segment_id: str, caller: Authorized) -> Response:
        sid = _segment_id(segment_id)
        rows = await asyncio.to_thread(state.rows, f"segment_id = {sql_literal(sid)}", ["thumbnail"], 1, caller)
        if not rows or not rows[0]["thumbnail"]:
            raise HTTPException(status_code=404, detail="no thumbnail")
        return Response(
            content=rows[0]["thumbnail"],
            media_type="image/jpeg",
            headers={"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"},
        )

    @app.get("/healthz", response_model=Health)
    async def healthz() -> Health:
        table = await asyncio.to_thread(state.searcher.open_table)
        rows = None if table is None else await asyncio.to_thread(table.count_rows)
        return Health(status="ok", indexed_rows=rows, auth=settings.serve_auth)

    page = files("workers.search").joinpath("static/index.html").read_text()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index(_: Request) -> HTMLResponse:
        return HTMLResponse(page)

    return app


def sse(event: str, data: dict[str, Any]) -> str:
    """One server-sent event (the data is one line of JSON)."""
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"
