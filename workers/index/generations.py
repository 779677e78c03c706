"""Which tables are the index now: a pointer that ``capstream reindex --from-scratch`` switches.

A rebuild from the topics must not be able to delete the index. It used to drop the table
and refill it from whatever the topics still held, so after the topics' retention had removed
old records most of the index was gone. Now a rebuild writes a new *generation* (a segments
table and a tombstone table with a new suffix), checks it against the one in use, and only
then switches a pointer: the one-row table ``<CAPSTREAM_INDEX_TABLE>_current``. Writers,
searchers and maintenance resolve the pointer instead of using the configured names; before
the first switch there is no pointer and the configured names are the generation, so
existing indexes need no migration.

The pointer is overwritten in one LanceDB commit, so a reader sees the old or the new
generation, never a mix. Index writers resolve it at every write (an open handle re-reads a
one-row table: 0.6 ms on local disk, measured), which is what makes the rebuild's catch-up
complete: a writer that still wrote to the old generation resolved the pointer before the
switch, so the records it wrote were on the topics before the switch, and the catch-up read
after the switch finds them.

The generation in use before a switch is kept as ``previous`` (a way back); older ones are
dropped by the next switch (the configured removals table excepted: indexes of other
embedding models may share it).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from pydantic import BaseModel

from workers.index.table import open_table
from workers.settings import IndexSettings


class IndexGeneration(BaseModel):
    """The tables one generation of the index consists of."""

    segments: str
    removals: str


class PointerRow(BaseModel):
    current: IndexGeneration
    previous: IndexGeneration | None = None
    switched_at: datetime


def configured_generation(settings: IndexSettings) -> IndexGeneration:
    """The generation before any switch: the tables the settings name."""
    return IndexGeneration(segments=settings.index_table, removals=settings.index_removals_table)


def new_generation(settings: IndexSettings, now: datetime | None = None) -> IndexGeneration:
    """Tables named after the segments table alone: several indexes (one per embedding model)
    may share the configured removals table, never a generation's."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S%fZ").lower()
    segments = f"{settings.index_table}-g{stamp}"
    return IndexGeneration(segments=segments, removals=f"{segments}-removals")


_SCHEMA = pa.schema(
    [
        pa.field("segments", pa.string(), nullable=False),
        pa.field("removals", pa.string(), nullable=False),
        pa.field("previous_segments", pa.string()),
        pa.field("previous_removals", pa.string()),
        pa.field("switched_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)


class TablePointer:
    """Reads and switches the pointer of one index (``CAPSTREAM_INDEX_TABLE``) in ``db``."""

    def __init__(self, db: Any, settings: IndexSettings) -> None:
        self._db = db
        self._settings = settings
        self.name = f"{settings.index_table}_current"
        self._table: Any = None

    def read(self) -> PointerRow | None:
        if self._table is None:
            self._table = open_table(self._db, self.name)
            if self._table is None:
                return None
        else:
            self._table.checkout_latest()  # connections without a consistency interval never refresh
        rows = self._table.to_arrow().to_pylist()
        if not rows:
            return None
        r = rows[0]
        previous = (
            IndexGeneration(segments=r["previous_segments"], removals=r["previous_removals"])
            if r["previous_segments"]
            else None
        )
        current = IndexGeneration(segments=r["segments"], removals=r["removals"])
        return PointerRow(current=current, previous=previous, switched_at=r["switched_at"])

    def current(self) -> IndexGeneration:
        row = self.read()
        return row.current if row is not None else configured_generation(self._settings)

    def switch(self, to: IndexGeneration) -> PointerRow:
        """Point at ``to`` (one commit); the generation in use becomes ``previous``."""
        before = self.current()
        row = PointerRow(current=to, previous=before, switched_at=datetime.now(UTC))
        data = {
            "segments": to.segments,
            "removals": to.removals,
            "previous_segments": before.segments,
            "previous_removals": before.removals,
            "switched_at": row.switched_at,
        }
        self._table = self._db.create_table(self.name, pa.Table.from_pylist([data], schema=_SCHEMA), mode="overwrite")
        return row

    def stale_tables(self) -> list[str]:
        """Tables of generations that are neither current nor previous (drop after a switch)."""
        row = self.read()
        if row is None:
            return []
        keep = {row.current.segments, row.current.removals}
        if row.previous is not None:
            keep |= {row.previous.segments, row.previous.removals}
        base = self._settings.index_table
        return [
            t
            for t in self._db.table_names()
            # the configured segments table or a generation's (never the shared removals table)
            if t not in keep and (t == base or (t.startswith(f"{base}-g") and t[len(base) + 2 :][:8].isdigit()))
        ]
