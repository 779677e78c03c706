"""One search against the segments table: the query model, the hit model, and the store query.

``search_table`` is pure and synchronous (callers run it in a thread): filters become one SQL
``where`` evaluated inside LanceDB before ranking (``prefilter=True``), so a filtered query
still returns ``k`` hits when ``k`` matching rows exist. Hybrid mode runs the vector leg and the
BM25 leg concurrently and fuses them with reciprocal rank fusion (RRF, k=60). Measured on 5,000
rows with a bucket filter, k=10: LanceDB's own hybrid query with ``RRFReranker`` and this fusion
return the same top 10 at the same p50 (15.4 vs 15.7 ms on a busy 2-core machine; the legs one
after the other took ~14 ms against ~10 ms on an idle one). Fusing here keeps each leg's
projection under our control: LanceDB's hybrid builder cannot select ``_distance``/``_score``
and logs a deprecation warning to stderr on every query instead. Per-object cap: rows are over-fetched,
grouped by object, and the fetch grows until ``k`` hits survive the cap or the store runs out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

Mode = Literal["hybrid", "vector", "text"]

RRF_K = 60  # the constant of reciprocal rank fusion (Cormack et al.; LanceDB's default too)
DISTANCE = "cosine"  # embeddings are compared by cosine; vector score = 1 - distance
FETCH_FACTOR = 4  # first over-fetch: k * this rows per leg
MAX_FETCH = 2000  # never ask one leg for more rows than this
TEXT_COLUMN = "caption"
HIT_COLUMNS = ["object_id", "segment_id", "uri", "bucket", "key", "start_s", "end_s", "caption"]


class EmptyQuery(ValueError):
    """The query is empty or only whitespace."""


class SearchQuery(BaseModel):
    q: str
    k: int = Field(default=10, ge=1, le=200)
    mode: Mode = "hybrid"
    bucket: str | None = None
    prefix: str | None = Field(default=None, description="key prefix")
    object_id: str | None = None
    per_object: int = Field(default=3, ge=0, description="most hits from one object; 0 = no cap")

    @field_validator("q")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise EmptyQuery("empty query")
        return value


class SearchHit(BaseModel):
    object_id: str
    segment_id: str
    uri: str
    bucket: str | None
    key: str | None
    start_s: float
    end_s: float
    caption: str
    score: float


def sql_string(value: str) -> str:
    """A SQL string literal (single quotes doubled)."""
    return "'" + value.replace("'", "''") + "'"


def where_clause(query: SearchQuery) -> str | None:
    """The filters of ``query`` as one SQL predicate, or None without filters."""
    parts = []
    if query.bucket:
        parts.append(f"bucket = {sql_string(query.bucket)}")
    if query.prefix:
        parts.append(f"starts_with(key, {sql_string(query.prefix)})")
    if query.object_id:
        parts.append(f"object_id = {sql_string(query.object_id)}")
    return " AND ".join(parts) or None


def has_text_index(table: Any) -> bool:
    """Whether the caption column has a full-text (BM25) index; text and hybrid need one."""
    return any(str(ix.index_type).upper() == "FTS" and TEXT_COLUMN in list(ix.columns) for ix in table.list_indices())


def effective_mode(table: Any, mode: Mode, have_vector: bool) -> Mode | None:
    """The mode that can run on ``table``: text/hybrid fall back to vector while there is no
    full-text index yet; None when nothing can run (text mode without index or vector)."""
    text = mode != "vector" and has_text_index(table)
    if mode == "text" and text:
        return "text"
    if mode == "hybrid" and text:
        return "hybrid" if have_vector else "text"
    return "vector" if have_vector else None


def cap_per_object(rows: Sequence[dict[str, Any]], per_object: int, k: int) -> list[dict[str, Any]]:
    """The best ``k`` rows, at most ``per_object`` of them from one object (0 = no cap)."""
    taken: dict[str, int] = {}
    out: list[dict[str, Any]] = []
    for row in rows:
        n = taken.get(row["object_id"], 0)
        if per_object and n >= per_object:
            continue
        taken[row["object_id"]] = n + 1
        out.append(row)
        if len(out) == k:
            break
    return out


def rrf(legs: Sequence[Sequence[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Reciprocal rank fusion of ranked row lists: score = sum of 1 / (RRF_K + rank)."""
    scores: dict[str, float] = {}
    first: dict[str, dict[str, Any]] = {}
    for leg in legs:
        for rank, row in enumerate(leg, start=1):
            sid = row["segment_id"]
            scores[sid] = scores.get(sid, 0.0) + 1.0 / (RRF_K + rank)
            first.setdefault(sid, row)
    ranked = sorted(scores, key=lambda sid: scores[sid], reverse=True)
    return [dict(first[sid], _score=scores[sid]) for sid in ranked]


def _vector_leg(table: Any, vector: list[float], where: str | None, limit: int) -> list[dict[str, Any]]:
    q = table.search(vector, vector_column_name="vector").distance_type(DISTANCE)
    if where:
        q = q.where(where, prefilter=True)
    rows: list[dict[str, Any]] = q.limit(limit).select([*HIT_COLUMNS, "_distance"]).to_list()
    for row in rows:
        row["_score"] = 1.0 - float(row.pop("_distance"))
    return rows


def _text_leg(table: Any, text: str, where: str | None, limit: int) -> list[dict[str, Any]]:
    q = table.search(text, query_type="fts", fts_columns=TEXT_COLUMN)
    if where:
        q = q.where(where, prefilter=True)
    rows: list[dict[str, Any]] = q.limit(limit).select([*HIT_COLUMNS, "_score"]).to_list()
    return rows


def search_table(table: Any, query: SearchQuery, vector: list[float] | None) -> list[SearchHit]:
    """Run ``query`` on ``table`` (``vector``: the embedded query, needed by vector/hybrid).

    Text and hybrid modes fall back to vector while the table has no full-text index
    (``effective_mode`` says which runs); without a runnable mode the answer is no hits.
    """
    if table is None:
        return []
    mode = effective_mode(table, query.mode, vector is not None)
    if mode is None:
        return []
    where = where_clause(query)

    def fetch_rows(limit: int) -> tuple[list[dict[str, Any]], bool]:
        """Ranked rows and whether the store may hold more (some leg filled its limit)."""
        runs: list[Callable[[], list[dict[str, Any]]]] = []
        if mode in ("vector", "hybrid"):
            assert vector is not None
            runs.append(lambda: _vector_leg(table, vector, where, limit))
        if mode in ("text", "hybrid"):
            runs.append(lambda: _text_leg(table, query.q, where, limit))
        if len(runs) == 1:
            legs = [runs[0]()]
        else:
            with ThreadPoolExecutor(max_workers=len(runs)) as pool:
                legs = [f.result() for f in [pool.submit(run) for run in runs]]
        more = any(len(leg) >= limit for leg in legs)
        return (rrf(legs) if len(legs) > 1 else legs[0]), more

    limit = min(query.k * FETCH_FACTOR, MAX_FETCH)
    while True:
        rows, more = fetch_rows(limit)
        chosen = cap_per_object(rows, query.per_object, query.k)
        if len(chosen) >= query.k or not more or limit >= MAX_FETCH:
            break
        limit = min(limit * FETCH_FACTOR, MAX_FETCH)
    return [SearchHit(**{c: row[c] for c in HIT_COLUMNS}, score=float(row["_score"])) for row in chosen]
