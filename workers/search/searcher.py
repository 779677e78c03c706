"""The one search path every caller takes (``capstream search``, ``capstream serve``, the
search evaluation): fit the query to the embed model, embed it the way the embed stage
embeds captions (same model, same backend), open the table, run ``search_table``.

Query instruction: Qwen3-Embedding embeds documents bare and queries as
``Instruct: {task}\\nQuery:{query}`` (its model card); ``CAPSTREAM_EMBED_QUERY_INSTRUCTION``
is that template, empty for models trained without one (the offline MiniLM).
Over-long queries are cut, at a token boundary of the model's own tokenizer, so that the
instruction plus the query fit the model's limit; the result says ``truncated``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Set as AbstractSet
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import structlog
from pydantic import BaseModel

from schemas.summary import ObjectSummary
from workers.embed.backend import EmbedBackend, make_embed_backend
from workers.index.generations import TablePointer
from workers.index.objects import ObjectsTable
from workers.index.table import connect, open_table
from workers.search.objects import ObjectHit, group_by_object, pool_size
from workers.search.query import Mode, SearchHit, SearchQuery, effective_mode, has_text_index, search_table
from workers.settings import SearchSettings

log = structlog.get_logger(__name__)

DEFAULT_TOKEN_LIMIT = 512  # when neither the settings nor the model folder say
PRE_CUT_CHARS_PER_TOKEN = 32  # longest text one token can cover, to bound tokenizer work
NO_INDEX = "nothing is indexed yet"
NO_TEXT_INDEX = "the index has no full-text index yet: vector search only"


class SearchResult(BaseModel):
    query: str  # the text searched (after truncation)
    mode: Mode | None  # the mode that ran (None: nothing could run)
    truncated: bool = False
    query_tokens: int | None = None  # tokens of the embedded query (instruction included)
    notice: str | None = None
    took_ms: float = 0.0
    hits: list[SearchHit]
    version: int | None = None  # the table version searched (a cursor pins it)


class ObjectSearchResult(BaseModel):
    query: str
    mode: Mode | None
    truncated: bool = False
    query_tokens: int | None = None
    notice: str | None = None
    took_ms: float = 0.0
    hits: list[ObjectHit]


class QueryTokenizer:
    """The embed model's tokenizer (``tokenizers``, no transformers import): counts and token ends."""

    def __init__(self, tokenizer: Any, model_max_length: int | None) -> None:
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self._tok = tokenizer
        self.model_max_length = model_max_length

    def count(self, text: str) -> int:
        return len(self._tok.encode(text, add_special_tokens=True).ids)

    def ends(self, text: str) -> list[int]:
        """Character offset where each token of ``text`` ends (no special tokens)."""
        return [end for _, end in self._tok.encode(text, add_special_tokens=False).offsets]


class QueryPrompt:
    """The query as the embed model sees it: the instruction template applied, within the
    model's token limit. Without a tokenizer (a hub model not in the local cache with the
    ``openai`` backend) the cut is by characters, one per token, which never exceeds it."""

    def __init__(self, instruction: str, tokenizer: QueryTokenizer | None, max_tokens: int) -> None:
        self.instruction = instruction
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens

    def prompt(self, q: str) -> str:
        if not self.instruction:
            return q
        if "{query}" in self.instruction:
            return self.instruction.replace("{query}", q)
        return self.instruction + q

    def count(self, text: str) -> int:
        return len(text) if self.tokenizer is None else self.tokenizer.count(text)

    def fit(self, q: str) -> tuple[str, bool, int]:
        """``(query, truncated, tokens of the prompt)`` with the prompt within the limit."""
        limit = self.max_tokens
        n = self.count(self.prompt(q))
        if n <= limit:
            return q, False, n
        budget = max(limit - self.count(self.prompt("")), 1)
        q = q[: limit * PRE_CUT_CHARS_PER_TOKEN]
        ends = list(range(1, len(q) + 1)) if self.tokenizer is None else self.tokenizer.ends(q)
        keep = min(budget, len(ends))
        while keep > 1:
            cut = q[: ends[keep - 1]].rstrip()
            n = self.count(self.prompt(cut))
            if n <= limit:
                return cut, True, n
            keep -= max(1, n - limit)
        cut = q[: ends[0]].rstrip() if ends else q[:1]
        return cut, True, self.count(self.prompt(cut))


def model_token_limit(settings: SearchSettings, tokenizer: QueryTokenizer | None) -> int:
    """The embed model's input limit: the setting, else the smallest of what the engine args,
    the model folder (sentence-transformers' ``max_seq_length``, ``max_position_embeddings``)
    and the tokenizer say."""
    if settings.search_max_query_tokens:
        return settings.search_max_query_tokens
    limits: list[int] = []
    try:
        engine_args = json.loads(settings.embed_engine_args or "{}")
    except ValueError:
        engine_args = {}
    if isinstance(engine_args, dict) and isinstance(engine_args.get("max_model_len"), int):
        limits.append(engine_args["max_model_len"])
    folder = Path(settings.embed_model).expanduser()
    for name, key in (("sentence_bert_config.json", "max_seq_length"), ("config.json", "max_position_embeddings")):
        value = _json_file(folder / name).get(key)
        if isinstance(value, int) and value > 0:
            limits.append(value)
    tok_max = tokenizer.model_max_length if tokenizer is not None else None
    if isinstance(tok_max, int) and 0 < tok_max < 1_000_000:
        limits.append(tok_max)
    return min(limits) if limits else DEFAULT_TOKEN_LIMIT


def _json_file(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _model_file(model: str, name: str) -> Path | None:
    """``name`` from the model folder, or from the hub cache (HF_HUB_OFFLINE is honoured)."""
    folder = Path(model).expanduser()
    if folder.is_dir():
        return folder / name if (folder / name).is_file() else None
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(model, name))
    except Exception:  # noqa: BLE001 - not cached, no network, no such file: the caller falls back
        return None


def load_tokenizer(model: str) -> QueryTokenizer | None:
    """The embed model's tokenizer (``tokenizer.json``), or None if unavailable."""
    path = _model_file(model, "tokenizer.json")
    if path is None:
        log.warning("search.tokenizer_unavailable", model=model, fallback="one token per character")
        return None
    from tokenizers import Tokenizer

    config_path = _model_file(model, "tokenizer_config.json")
    max_length = _json_file(config_path).get("model_max_length") if config_path else None
    return QueryTokenizer(Tokenizer.from_file(str(path)), max_length if isinstance(max_length, int) else None)


class Searcher:
    """Embeds queries with the embed stage's model and backend and searches the index."""

    def __init__(
        self, settings: SearchSettings, backend: EmbedBackend | None = None, engine_executor: Executor | None = None
    ) -> None:
        """``engine_executor``: the thread of every in-process engine of this process (an
        answering engine beside the query embedder must never run at the same time)."""
        self.settings = settings
        self._backend = backend
        self._executor = engine_executor
        self._backend_started = False
        self._lock = asyncio.Lock()
        self._db: Any = None
        self._pointer: TablePointer | None = None
        self._prompt: QueryPrompt | None = None

    async def start(self, embed: bool = True) -> None:
        """Load the tokenizer; with ``embed`` also start the embed backend now (else on first use)."""
        await self._query_prompt()
        if embed:
            await self.embedder()

    async def close(self) -> None:
        if self._backend is not None and self._backend_started:
            await self._backend.close()
            self._backend_started = False

    async def _query_prompt(self) -> QueryPrompt:
        if self._prompt is None:
            tokenizer = await asyncio.to_thread(load_tokenizer, self.settings.embed_model)
            limit = model_token_limit(self.settings, tokenizer)
            self._prompt = QueryPrompt(self.settings.embed_query_instruction, tokenizer, limit)
            log.info("search.query_limit", model=self.settings.embed_model, max_tokens=limit)
        return self._prompt

    async def embedder(self) -> EmbedBackend:
        """The query embed backend, started on first use."""
        async with self._lock:
            if self._backend is None:
                self._backend = make_embed_backend(self.settings, self._executor)
            if not self._backend_started:
                await self._backend.start()
                self._backend_started = True
            return self._backend

    def open_table(self) -> Any | None:
        """The segments table at its newest version, or None before anything is indexed (sync)."""
        if self._db is None:
            self._db = connect(self.settings)
        if self._pointer is None:
            self._pointer = TablePointer(self._db, self.settings)
        return open_table(self._db, self._pointer.current().segments)

    async def search(
        self, query: SearchQuery, version: int | None = None, exclude: AbstractSet[str] = frozenset()
    ) -> SearchResult:
        """``version``: search the table as it was then (the next page of a cursor, which new
        rows must not reorder); ``exclude``: segment ids already shown."""
        started = time.perf_counter()
        prompt = await self._query_prompt()
        text, truncated, n_tokens = prompt.fit(query.q)
        result = SearchResult(query=text, mode=None, truncated=truncated, query_tokens=n_tokens, hits=[])
        table = await asyncio.to_thread(self.open_table)
        if table is not None and version is not None:
            await asyncio.to_thread(table.checkout, version)  # a fresh handle per query: nobody else sees it
        if table is None:
            result.notice = NO_INDEX
        else:
            result.version = int(table.version)
            text_index = await asyncio.to_thread(has_text_index, table)
            vector = None
            if query.mode != "text" or not text_index:
                backend = await self.embedder()
                vector = await backend.embed(prompt.prompt(text))
            result.mode = effective_mode(table, query.mode, vector is not None)
            if result.mode != query.mode:
                result.notice = NO_TEXT_INDEX
            fitted = query.model_copy(update={"q": text})
            result.hits = await asyncio.to_thread(search_table, table, fitted, vector, exclude)
        result.took_ms = round((time.perf_counter() - started) * 1000, 1)
        log.info(
            "search",
            mode=result.mode,
            requested_mode=query.mode,
            k=query.k,
            hits=len(result.hits),
            truncated=truncated,
            took_ms=result.took_ms,
        )
        return result

    async def search_objects(self, query: SearchQuery) -> ObjectSearchResult:
        """Objects ranked by their best moments, with summaries and chapters (``workers.search.objects``)."""
        started = time.perf_counter()
        pool = query.model_copy(update={"k": pool_size(query.k), "per_object": 0})
        moments = await self.search(pool)
        hits = group_by_object(moments.hits, query.k)
        summaries = await asyncio.to_thread(self.summaries, [h.object_id for h in hits], query.collections)
        for h in hits:
            if (s := summaries.get(h.object_id)) is not None:
                h.summary, h.chapters, h.duration_s = s.summary, s.chapters, s.duration_s
        return ObjectSearchResult(
            query=moments.query,
            mode=moments.mode,
            truncated=moments.truncated,
            query_tokens=moments.query_tokens,
            notice=moments.notice,
            took_ms=round((time.perf_counter() - started) * 1000, 1),
            hits=hits,
        )

    def summaries(self, object_ids: list[str], collections: list[str] | None = None) -> dict[str, ObjectSummary]:
        """The summaries of these objects, in ``collections`` when given (sync)."""
        if self._db is None:
            self._db = connect(self.settings)
        return ObjectsTable(self._db, self.settings).get(object_ids, collections)
