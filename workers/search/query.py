"""One search against the segments table: the query model, the hit model, and the store query.

``search_table`` is pure and synchronous (callers run it in a thread): filters become one SQL
``where`` evaluated inside LanceDB before ranking (``prefilter=True``), so a filtered query
still returns ``k`` hits when ``k`` matching rows exist.

Hybrid mode runs the vector leg and the BM25 leg concurrently and fuses them by a convex
combination of their min-max-normalised scores, ``HYBRID_ALPHA`` x vector + (1 - alpha) x BM25.
Reciprocal rank fusion (RRF, k=60) was the first choice and lost to plain vector search on
``loadtest.search_eval``'s corpus (375 segments, 90 queries, MiniLM): any row found by both
legs, however low, outranks the vector leg's top row found by it alone, so paraphrases lost to
incidental word matches. Same table, same candidates (40 per leg), per-object cap 3:

| fusion | recall@1 | recall@5 | MRR | exact-term recall@1 | paraphrase recall@1 |
|---|---|---|---|---|---|
| vector only | 0.822 | 0.967 | 0.907 | 0.897 | 0.777 |
| RRF k=60 | 0.661 | 0.878 | 0.776 | 0.897 | 0.518 |
| convex, alpha 0.8 | 0.833 | 0.956 | 0.910 | 0.926 | 0.777 |
| convex, alpha 0.7 | 0.822 | 0.956 | 0.902 | 0.956 | 0.741 |

Alpha was picked on that corpus, so it is tuned to it; 0.7-0.9 all beat RRF on recall@1, recall@5 and MRR.
Fusing here, not with LanceDB's hybrid builder, keeps each leg's scores: that builder cannot
select ``_distance``/``_score`` and logs a deprecation warning on every query. Per-object cap:
rows are over-fetched, grouped by object, and the fetch grows until ``k`` hits survive the cap
or the store runs out.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from collections.abc import Set as AbstractSet
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from schemas.embeddings import Modality
from workers.index.table import ADDED_COLUMNS, TEXT_COLUMN, sql_literal, text_index

Mode = Literal["hybrid", "vector", "text"]

HYBRID_ALPHA = 0.8  # weight of the vector leg in hybrid fusion (see the module docstring)
REFINE_FACTOR = 5
DISTANCE = "cosine"  # embeddings are compared by cosine; vector score = 1 - distance
FETCH_FACTOR = 4  # first over-fetch: k * this rows per leg
MAX_FETCH = 2000  # never ask one leg for more rows than this
HIT_COLUMNS = [
    "object_id",
    "segment_id",
    "uri",
    "bucket",
    "key",
    "start_s",
    "end_s",
    "caption",
    "modality",
    "language",
    "collection",
    "page_number",
]
# Hits of one object closer than this in time are one moment (a caption and what was said then).
MERGE_GAP_S = 0.5


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
    modality: Modality | None = Field(default=None, description="only rows of this kind: visual, speech or page")
    merge: bool = Field(
        default=True, description="fold a lower hit of another modality at the same moment into the hit"
    )
    collections: list[str] | None = Field(
        default=None, min_length=1, description="only rows of these collections (an API key's scope); None = all"
    )

    @field_validator("q")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise EmptyQuery("empty query")
        return value


class MomentText(BaseModel):
    """Another row of the same moment folded into a hit: e.g. what was said while the hit's
    caption was shown."""

    segment_id: str
    modality: Modality
    start_s: float
    end_s: float
    text: str
    score: float


class SearchHit(BaseModel):
    object_id: str
    segment_id: str
    uri: str
    bucket: str | None
    key: str | None
    start_s: float
    end_s: float
    caption: str  # the caption, or the transcript when modality is speech
    modality: Modality = "visual"
    language: str | None = None
    collection: str | None = None
    page_number: int | None = Field(default=None, description="1-based page of a document hit; its times are 0")
    score: float
    also: list[MomentText] = Field(default_factory=list, description="rows of other modalities at this moment")


def where_clause(query: SearchQuery, table_columns: Collection[str] | None = None) -> str | None:
    """The filters of ``query`` as one SQL predicate, or None without filters. A column the
    table does not have yet (``ADDED_COLUMNS``) is read as the value its old rows will get."""

    def column(name: str) -> str:
        return name if table_columns is None or name in table_columns else ADDED_COLUMNS[name]

    parts = []
    if query.bucket:
        parts.append(f"bucket = {sql_literal(query.bucket)}")
    if query.prefix:
        parts.append(f"starts_with(key, {sql_literal(query.prefix)})")
    if query.object_id:
        parts.append(f"object_id = {sql_literal(query.object_id)}")
    if query.modality:
        parts.append(f"{column('modality')} = {sql_literal(query.modality)}")
    if query.collections is not None:
        parts.append(f"{column('collection')} IN ({', '.join(sql_literal(c) for c in sorted(set(query.collections)))})")
    return " AND ".join(parts) or None


def merge_moments(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ranked rows with each row that overlaps (within ``MERGE_GAP_S``) a better-ranked row of
    the same object and another modality folded into that row's ``also``; a row is folded at
    most once and into a row that was not itself folded."""
    kept: list[dict[str, Any]] = []
    for row in rows:
        home = next(
            (
                k
                for k in kept
                if k["object_id"] == row["object_id"]
                and k.get("modality") != row.get("modality")
                and row.get("modality") not in {a["modality"] for a in k["also"]}
                and row["start_s"] <= k["end_s"] + MERGE_GAP_S
                and k["start_s"] <= row["end_s"] + MERGE_GAP_S
            ),
            None,
        )
        if home is None:
            kept.append(dict(row, also=[]))
        else:
            home["also"].append(
                MomentText(
                    segment_id=row["segment_id"],
                    modality=row.get("modality") or "visual",
                    start_s=row["start_s"],
                    end_s=row["end_s"],
                    text=row["caption"],
                    score=float(row["_score"]),
                ).model_dump()
            )
    return kept


def hit_columns(table: Any) -> list[str]:
    """``HIT_COLUMNS`` this table has: a table no index worker has opened since columns were
    added (``ADDED_COLUMNS``) lacks them until it does."""
    names = set(table.schema.names)
    return [c for c in HIT_COLUMNS if c in names or c not in ADDED_COLUMNS]


def has_text_index(table: Any) -> bool:
    """Whether the caption column has a full-text (BM25) index; text and hybrid need one."""
    return text_index(table) is not None


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


def fuse(vector_rows: Sequence[dict[str, Any]], text_rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Convex combination of the two legs' min-max-normalised scores (a row missing from a
    leg scores 0 there), best first; ``_score`` becomes the fused score."""
    fused: dict[str, float] = {}
    first: dict[str, dict[str, Any]] = {}
    for weight, rows in ((HYBRID_ALPHA, vector_rows), (1.0 - HYBRID_ALPHA, text_rows)):
        if not rows:
            continue
        scores = [float(row["_score"]) for row in rows]
        low, high = min(scores), max(scores)
        for row, raw in zip(rows, scores, strict=True):
            sid = row["segment_id"]
            normalised = (raw - low) / (high - low) if high > low else 1.0
            fused[sid] = fused.get(sid, 0.0) + weight * normalised
            first.setdefault(sid, row)
    ranked = sorted(fused, key=lambda sid: fused[sid], reverse=True)
    return [dict(first[sid], _score=fused[sid]) for sid in ranked]


def _vector_leg(
    table: Any, vector: list[float], where: str | None, limit: int, columns: list[str]
) -> list[dict[str, Any]]:
    # refine_factor: re-rank 5x the candidates by exact distance. With the IVF_HNSW_SQ index,
    # scalar quantisation drops near-tied neighbours: recall@10 against exact search was 0.755
    # at 1M rows (0.943 at 100k) without it and 1.00 with it, for ~1 ms (loadtest.search_bench;
    # docs/search.md).
    # Without an index the search is exact and this changes nothing.
    q = table.search(vector, vector_column_name="vector").distance_type(DISTANCE).refine_factor(REFINE_FACTOR)
    if where:
        q = q.where(where, prefilter=True)
    rows: list[dict[str, Any]] = q.limit(limit).select([*columns, "_distance"]).to_list()
    for row in rows:
        row["_score"] = 1.0 - float(row.pop("_distance"))
    return rows


def _text_leg(table: Any, text: str, where: str | None, limit: int, columns: list[str]) -> list[dict[str, Any]]:
    q = table.search(text, query_type="fts", fts_columns=TEXT_COLUMN)
    if where:
        q = q.where(where, prefilter=True)
    rows: list[dict[str, Any]] = q.limit(limit).select([*columns, "_score"]).to_list()
    return rows


def search_table(
    table: Any, query: SearchQuery, vector: list[float] | None, exclude: AbstractSet[str] = frozenset()
) -> list[SearchHit]:
    """Run ``query`` on ``table`` (``vector``: the embedded query, needed by vector/hybrid).

    Text and hybrid modes fall back to vector while the table has no full-text index
    (``effective_mode`` says which runs); without a runnable mode the answer is no hits.
    ``exclude``: segment ids already shown (earlier pages of the query), never returned again.
    """
    if table is None:
        return []
    mode = effective_mode(table, query.mode, vector is not None)
    if mode is None:
        return []
    where = where_clause(query, table.schema.names)
    columns = hit_columns(table)

    def fetch_rows(limit: int) -> tuple[list[dict[str, Any]], bool]:
        """Ranked rows not yet shown, and whether the store may hold more (some leg filled its limit)."""
        runs: list[Callable[[], list[dict[str, Any]]]] = []
        if mode in ("vector", "hybrid"):
            assert vector is not None
            runs.append(lambda: _vector_leg(table, vector, where, limit, columns))
        if mode in ("text", "hybrid"):
            runs.append(lambda: _text_leg(table, query.q, where, limit, columns))
        if len(runs) == 1:
            legs = [runs[0]()]
        else:
            with ThreadPoolExecutor(max_workers=len(runs)) as pool:
                legs = [f.result() for f in [pool.submit(run) for run in runs]]
        more = any(len(leg) >= limit for leg in legs)
        ranked = fuse(legs[0], legs[1]) if len(legs) > 1 else legs[0]
        return [r for r in ranked if r["segment_id"] not in exclude], more

    limit = min((query.k + len(exclude)) * FETCH_FACTOR, MAX_FETCH)
    while True:
        rows, more = fetch_rows(limit)
        chosen = cap_per_object(merge_moments(rows) if query.merge else rows, query.per_object, query.k)
        if len(chosen) >= query.k or not more or limit >= MAX_FETCH:
            break
        limit = min(limit * FETCH_FACTOR, MAX_FETCH)
    return [
        SearchHit(
            **{c: row[c] for c in columns if row.get(c) is not None},
            score=float(row["_score"]),
            also=row.get("also", []),
        )
        for row in chosen
    ]
