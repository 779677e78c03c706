"""The ``objects`` table: one row per summarized object version (summary and chapters).

It sits beside the segments table (``<CAPSTREAM_INDEX_TABLE>_objects``, one per index, not
per generation: a rebuild of the segments keeps the summaries). A row lives as long as its
object's rows do:

- the summarize stage writes a row only for an object with rows in the segments table, and
  reads them again after its commit, deleting its row if they went meanwhile;
- the index writer deletes the summary whenever it deletes an object's rows (a removal, a
  newer version of the key), in ``SegmentIndex._delete_objects``.

So of a removal and a summary racing, whichever commits last sees the other's effect, as for
two segment writers (``workers.index.writer``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import pyarrow as pa

from schemas.summary import Chapter, ObjectSummary
from workers.index.table import open_table, sql_literal
from workers.settings import IndexSettings

KEY = "object_id"


def objects_table_name(settings: IndexSettings) -> str:
    return f"{settings.index_table}_objects"


def objects_schema() -> pa.Schema:
    return pa.schema(
        [
            pa.field("object_id", pa.string(), nullable=False),
            pa.field("uri", pa.string(), nullable=False),
            pa.field("bucket", pa.string()),
            pa.field("key", pa.string()),
            pa.field("version", pa.string()),
            pa.field("collection", pa.string(), nullable=False),
            pa.field("duration_s", pa.float64(), nullable=False),
            pa.field("summary", pa.string(), nullable=False),
            pa.field("chapters", pa.string(), nullable=False),  # JSON list of Chapter
            pa.field("moments", pa.int32(), nullable=False),
            pa.field("passes", pa.int32(), nullable=False),
            pa.field("model", pa.string(), nullable=False),
            pa.field("summarized_at", pa.timestamp("us", tz="UTC"), nullable=False),
        ]
    )


def to_row(summary: ObjectSummary) -> dict[str, Any]:
    row = summary.model_dump(exclude={"chapters"})
    row["chapters"] = json.dumps([c.model_dump() for c in summary.chapters])
    return row


def from_row(row: dict[str, Any]) -> ObjectSummary:
    chapters = [Chapter.model_validate(c) for c in json.loads(row["chapters"] or "[]")]
    return ObjectSummary.model_validate({**{k: row[k] for k in objects_schema().names}, "chapters": chapters})


def in_filter(column: str, values: Iterable[str]) -> str:
    return f"{column} IN ({', '.join(sql_literal(v) for v in sorted(set(values)))})"


class ObjectsTable:
    """The objects table of one LanceDB connection (sync calls: run them on a thread)."""

    def __init__(self, db: Any, settings: IndexSettings) -> None:
        self._db = db
        self.name = objects_table_name(settings)
        self._table: Any = None

    def table(self, create: bool = False) -> Any | None:
        if self._table is None:
            self._table = open_table(self._db, self.name)
            if self._table is None and create:
                self._table = self._db.create_table(self.name, schema=objects_schema(), exist_ok=True)
        return self._table

    def upsert(self, summary: ObjectSummary) -> None:
        table = self.table(create=True)
        assert table is not None
        data = pa.Table.from_pylist([to_row(summary)], schema=objects_schema())
        table.merge_insert(KEY).when_matched_update_all().when_not_matched_insert_all().execute(data)

    def delete(self, object_ids: Iterable[str]) -> int:
        """Delete these objects' summaries; returns how many there were."""
        ids = set(object_ids)
        table = self.table()
        if table is None or not ids:
            return 0
        res = table.delete(in_filter(KEY, ids))
        return int(getattr(res, "num_deleted_rows", 0) or 0)

    def get(self, object_ids: Iterable[str], collections: list[str] | None = None) -> dict[str, ObjectSummary]:
        """The summaries of these objects (those in ``collections``, when given)."""
        ids = set(object_ids)
        table = self.table()
        if table is None or not ids:
            return {}
        where = in_filter(KEY, ids)
        if collections is not None:
            where = f"{where} AND {in_filter('collection', collections) if collections else 'false'}"
        rows = table.search().where(where).limit(len(ids)).to_list()
        return {r[KEY]: from_row(r) for r in rows}
