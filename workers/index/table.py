"""The LanceDB table of indexed segments: its columns, and how to reach it.

One row per segment, keyed by ``segment_id`` (deterministic, so a replay upserts the same
row). The store is LanceDB, embedded. It was chosen on a comparison of stores made before the
index stage existed (2-core machine, 100k rows of 384-d vectors): LanceDB ingested ~44k
rows/s and answered vector, full-text and hybrid-with-filter queries in ~7, ~7 and ~32 ms;
Milvus Lite on the same data ingested 3k rows/s and answered hybrid queries in 950 ms. Those
figures compare the stores. The index stage's own ingest and query times, through
``SegmentIndex.upsert`` (a merge and per-key lookups per batch) and ``search_table``, are
``loadtest.search_bench``'s, reported in docs/search.md (8,258 rows/s into a 100k-row table,
slowing as the table grows).

The table lives in a local directory or under ``s3://bucket/prefix`` on the same S3
store as the media, where several writers may commit concurrently (three processes appending
30 commits each to one table on SeaweedFS lost no row), so index workers scale as an ordinary
consumer group and search servers are stateless readers.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import lancedb
import pyarrow as pa

from workers.settings import IndexSettings

KEY = "segment_id"
TEXT_COLUMN = "caption"  # the column with the full-text (BM25) index


def sql_literal(value: str) -> str:
    """A string literal for a LanceDB filter (single quotes doubled), for values from outside."""
    return "'" + value.replace("'", "''") + "'"


def row_schema(dim: int) -> pa.Schema:
    """Columns of the segments table; the vector width is fixed when the table is created."""
    return pa.schema(
        [
            pa.field("segment_id", pa.string(), nullable=False),
            pa.field("embedding_id", pa.string(), nullable=False),
            pa.field("object_id", pa.string(), nullable=False),
            pa.field("segment_index", pa.int32(), nullable=False),
            pa.field("uri", pa.string(), nullable=False),
            pa.field("bucket", pa.string()),
            pa.field("key", pa.string()),
            pa.field("version", pa.string()),  # orders versions of one key (schemas.events.version_order)
            pa.field("start_s", pa.float64(), nullable=False),
            pa.field("end_s", pa.float64(), nullable=False),
            pa.field("caption", pa.string(), nullable=False),  # the caption, or what was said
            pa.field("caption_model", pa.string(), nullable=False),
            pa.field("modality", pa.string(), nullable=False),  # visual, speech or page (schemas.embeddings)
            pa.field("language", pa.string()),  # a transcript's language
            pa.field("page_number", pa.int32()),  # 1-based page of a document; null for media
            pa.field("collection", pa.string(), nullable=False),  # workers/access/collections.py
            pa.field("embedding_model", pa.string(), nullable=False),
            pa.field("vector", pa.list_(pa.float32(), dim), nullable=False),
            pa.field("thumbnail", pa.binary()),
            pa.field("indexed_at", pa.timestamp("us", tz="UTC"), nullable=False),
        ]
    )


# Columns added since the first tables were made, with the value old rows get (a SQL
# expression): ``add_missing_columns`` brings an older table up to ``row_schema``.
# Rows from before collections existed are the implicit `default` collection's; `capstream
# reindex` re-files them under configured collections.
ADDED_COLUMNS: dict[str, str] = {
    "modality": "'visual'",
    "language": "CAST(NULL AS STRING)",
    "collection": "'default'",
    "page_number": "CAST(NULL AS INT)",
}


def add_missing_columns(table: Any) -> list[str]:
    """Add the ``ADDED_COLUMNS`` an older table lacks (a metadata commit plus one pass over the
    rows); returns their names."""
    missing = {name: expr for name, expr in ADDED_COLUMNS.items() if name not in table.schema.names}
    if missing:
        table.add_columns(missing)
    return list(missing)


def storage_options(settings: IndexSettings) -> dict[str, str]:
    """Object-store options for an ``s3://`` index on the configured S3 endpoint; AWS keys
    come from the standard environment variables, as for every other S3 client here."""
    if not settings.index_uri.startswith("s3://"):
        return {}
    options = {"region": settings.s3_region}
    if settings.s3_endpoint_url:
        options["endpoint"] = settings.s3_endpoint_url
        options["allow_http"] = str(settings.s3_endpoint_url.startswith("http://")).lower()
    return options


def removals_schema() -> pa.Schema:
    """Columns of the tombstone table: one row per applied removal (``ObjectRemoved``), kept so
    a late embedding of a removed version is not written back. Like the segments table it is a
    projection of the topics (the removals topic), rebuilt by ``capstream reindex``."""
    return pa.schema(
        [
            pa.field("bucket", pa.string(), nullable=False),
            pa.field("key", pa.string(), nullable=False),
            pa.field("version", pa.string()),  # every version up to this one, when object_id is null
            pa.field("object_id", pa.string()),  # just this object version
            pa.field("removed_at", pa.timestamp("us", tz="UTC"), nullable=False),
        ]
    )


def vector_dim(table: Any) -> int:
    """The vector width a table was created with."""
    return int(table.schema.field("vector").type.list_size)


def connect(settings: IndexSettings, *, read_consistency_interval: timedelta | None = None) -> Any:
    """A LanceDB connection to ``CAPSTREAM_INDEX_URI`` (a local directory is created).

    ``read_consistency_interval=timedelta(0)`` makes every read see the latest commit of any
    process (the index writers need that; readers may accept staleness for speed).
    """
    uri = settings.index_uri
    if not uri.startswith("s3://"):
        path = Path(uri).expanduser()
        path.mkdir(parents=True, exist_ok=True)
        uri = str(path)
    return lancedb.connect(
        uri, storage_options=storage_options(settings) or None, read_consistency_interval=read_consistency_interval
    )


def text_index(table: Any) -> Any | None:
    """The full-text index of the text column (its name, for ``index_stats``), or None: the
    index stage builds it after the first rows; text and hybrid search need it."""
    return next(
        (ix for ix in table.list_indices() if str(ix.index_type).upper() == "FTS" and TEXT_COLUMN in list(ix.columns)),
        None,
    )


def open_table(db: Any, name: str) -> Any | None:
    """The table, or None if nothing has been indexed yet."""
    if name not in db.table_names():
        return None
    return db.open_table(name)
