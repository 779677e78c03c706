"""The store side of the index stage: embeddings and removals -> the LanceDB segments table.

Synchronous LanceDB calls, meant to run on one writer thread per process (``IndexBatcher``).
Every write is idempotent and order-free, so redelivery, replays and several writers at once
converge on the same table:

- rows are upserted (``merge_insert``) on ``segment_id``, a deterministic id;
- per key, only the newest object version stays (``versions.dead_objects``); a removal is
  recorded as a tombstone (table ``removals``) before rows are deleted, so an embedding of a
  removed version that arrives late is not written back;
- after its own commit a write reads the key's state again and deletes what is dead: of two
  writers racing on one key, the one that commits last sees both and cleans up.
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pyarrow as pa
import structlog

from schemas.embeddings import Embedding
from schemas.events import ObjectRemoved
from workers.access.collections import UNFILED
from workers.index.generations import IndexGeneration, TablePointer, configured_generation
from workers.index.objects import ObjectsTable
from workers.index.table import (
    add_missing_columns,
    connect,
    open_table,
    removals_schema,
    row_schema,
    sql_literal,
    vector_dim,
)
from workers.index.versions import ObjectVersion, Tombstone, dead_objects, sweeps
from workers.runtime.errors import PermanentError
from workers.settings import IndexSettings

log = structlog.get_logger("capstream.index")

T = TypeVar("T")

# Lance retries conflicting commits itself; a conflict that outlives its retries (another
# writer or a compaction touched the same fragments) is retried here a few times more.
_CONFLICT = re.compile(r"conflict|retryable", re.IGNORECASE)
_CONFLICT_RETRIES = 5
# An IN-list per filter; keeps filters a readable size on large batches.
_IN_CHUNK = 200


@dataclass
class WriteResult:
    """What one ``write`` did: rows committed, embeddings not written because their version is
    dead (superseded or removed), embeddings refused (``dim_mismatch``), stale rows deleted."""

    written: int = 0
    skipped: list[str] = field(default_factory=list)  # segment ids
    rejected: dict[str, PermanentError] = field(default_factory=dict)  # segment id -> error
    deleted: int = 0


def _in_filters(column: str, values: Iterable[str]) -> list[str]:
    items = sorted(set(values))
    return [
        f"{column} IN ({', '.join(sql_literal(v) for v in items[i : i + _IN_CHUNK])})"
        for i in range(0, len(items), _IN_CHUNK)
    ]


def _chunks(items: list[str]) -> list[list[str]]:
    return [items[i : i + _IN_CHUNK] for i in range(0, len(items), _IN_CHUNK)]


def dim_mismatch(embedding: Embedding, table_dim: int, table_name: str) -> PermanentError:
    """The dead letter of an embedding the table cannot hold, with how to move to its model."""
    return PermanentError(
        "dim_mismatch",
        f"embedding of model {embedding.model!r} has {embedding.dim} dimensions, table {table_name!r} holds "
        f"{table_dim}. To index a new embedding model, give it its own table: set CAPSTREAM_INDEX_TABLE "
        f"(e.g. {table_name}_{embedding.dim}) on the index workers and search, and fill it with "
        f"`capstream reindex --model {embedding.model}`; or rebuild this table for that model with "
        "`capstream reindex --from-scratch --model ...`. Then `capstream dlq replay --stage index "
        "--reason dim_mismatch` re-sends these embeddings.",
        object_id=embedding.object_id,
        segment_id=embedding.segment_id,
    )


def to_row(e: Embedding, indexed_at: datetime, collection: str) -> dict[str, Any]:
    return {
        "segment_id": e.segment_id,
        "embedding_id": e.embedding_id,
        "object_id": e.object_id,
        "segment_index": e.segment_index,
        "uri": e.source_uri,
        "bucket": e.bucket,
        "key": e.key,
        "version": e.version,
        "start_s": e.start_s,
        "end_s": e.end_s,
        "caption": e.caption,
        "caption_model": e.caption_model,
        "modality": e.modality,
        "language": e.language,
        "page_number": e.page_number,
        "collection": collection,
        "embedding_model": e.model,
        "vector": e.vector,
        "thumbnail": e.thumbnail or None,
        "indexed_at": indexed_at,
    }


class SegmentIndex:
    """The segments table and its tombstones, for one writer thread.

    Not thread-safe: one instance per writer thread (``IndexBatcher`` owns one). Opens the
    connection lazily, so a worker starts while the store is down and waits on its first write.
    Writes go to the generation the index's pointer names at that moment
    (``workers.index.generations``), or to ``generation`` when one is given (a rebuild).
    """

    def __init__(self, settings: IndexSettings, *, generation: IndexGeneration | None = None) -> None:
        self.settings = settings
        self._pinned = generation
        self.generation = generation or configured_generation(settings)
        self._db: Any = None
        self._pointer: TablePointer | None = None
        self._table: Any = None
        self._removals: Any = None
        self.collections = settings.collection_rules()

    @property
    def table_name(self) -> str:
        return self.generation.segments

    @property
    def removals_name(self) -> str:
        return self.generation.removals

    # -- connection -------------------------------------------------------------------
    def db(self) -> Any:
        if self._db is None:
            # Strong consistency: every read sees the other writers' latest commits.
            self._db = connect(self.settings, read_consistency_interval=timedelta(0))
        return self._db

    def follow(self) -> IndexGeneration:
        """Use the generation the pointer names now (unless pinned to one)."""
        if self._pinned is None:
            if self._pointer is None:
                self._pointer = TablePointer(self.db(), self.settings)
            current = self._pointer.current()
            if current != self.generation:
                log.info("index_generation_followed", table=current.segments, before=self.generation.segments)
                self.generation = current
                self._table = None
                self._removals = None
        return self.generation

    def table(self) -> Any | None:
        """The segments table, or None before the first row was written anywhere."""
        self.follow()
        if self._table is None:
            self._table = open_table(self.db(), self.table_name)
            if self._table is not None and (added := retry_conflicts(lambda: add_missing_columns(self._table))):
                log.info("index_columns_added", table=self.table_name, columns=added)
        return self._table

    def _removals_table(self, create: bool) -> Any | None:
        if self._removals is None:
            self._removals = open_table(self.db(), self.removals_name)
            if self._removals is None and create:
                self._removals = self.db().create_table(self.removals_name, schema=removals_schema(), exist_ok=True)
        return self._removals

    def _create_table(self, dim: int) -> Any:
        # exist_ok: another writer may create it first; then its dimension is the table's.
        self._table = self.db().create_table(self.table_name, schema=row_schema(dim), exist_ok=True)
        log.info("index_table_created", table=self.table_name, dim=vector_dim(self._table), uri=self.settings.index_uri)
        return self._table

    def probe(self) -> None:
        """Reach the store (list its tables) or raise: tells an outage from a bad batch."""
        self._db = None
        self._pointer = None
        self._table = None
        self._removals = None
        self.db().table_names()

    def count_rows(self) -> int:
        table = self.table()
        return 0 if table is None else int(table.count_rows())

    # -- writes -----------------------------------------------------------------------
    def upsert(self, embeddings: Sequence[Embedding]) -> None:
        """Write ``embeddings`` (one row per segment, replacing earlier rows of the segment).

        Raises ``PermanentError('dim_mismatch')`` for the first embedding the table cannot
        hold, after the others were written.
        """
        result = self.write(embeddings)
        if result.rejected:
            raise next(iter(result.rejected.values()))

    def write(self, embeddings: Sequence[Embedding]) -> WriteResult:
        """One commit of rows (plus the deletes the version rule calls for); see the module doc."""
        result = WriteResult()
        latest: dict[str, Embedding] = {}
        for e in embeddings:  # a batch may hold one segment twice (redelivery): one row
            latest[e.segment_id] = e
        if not latest:
            return result
        table = self.table() or self._create_table(next(iter(latest.values())).dim)
        dim = vector_dim(table)
        batch: list[Embedding] = []
        for e in latest.values():
            if e.dim != dim:
                result.rejected[e.segment_id] = dim_mismatch(e, dim, self.table_name)
            else:
                batch.append(e)
        keys = {(e.bucket, e.key) for e in batch if e.bucket and e.key}
        if keys:
            present = self._present(table, keys)
            tombs = self._tombstones(keys, {e.object_id for e in batch})
            dead: set[str] = set()
            for bk in keys:
                candidates = present.get(bk, set()) | {
                    ObjectVersion(e.object_id, e.version) for e in batch if (e.bucket, e.key) == bk
                }
                dead |= dead_objects(candidates, tombs.get(bk, []))
            dead |= {t.object_id for ts in tombs.values() for t in ts if t.object_id}
            result.skipped = [e.segment_id for e in batch if e.object_id in dead]
            batch = [e for e in batch if e.object_id not in dead]
        if batch:
            now = datetime.now(UTC)
            data = pa.Table.from_pylist(
                # An object in no collection (indexed before the rules changed) is seen by no key.
                [to_row(e, now, self.collections.of(e.bucket, e.key) or UNFILED) for e in batch],
                schema=table.schema,
            )
            retry_conflicts(
                lambda: (
                    table.merge_insert("segment_id")
                    .when_matched_update_all()
                    .when_not_matched_insert_all()
                    .execute(data)
                )
            )
            result.written = len(batch)
        if keys:
            result.deleted = self._reconcile(table, keys)
        return result

    def remove(self, removed: ObjectRemoved) -> int:
        """Apply an ``ObjectRemoved``: record its tombstone, then delete the rows it sweeps.
        Returns the number of rows deleted."""
        tomb = Tombstone(removed.bucket, removed.key, removed.version, removed.object_id)
        self.follow()
        removals = self._removals_table(create=True)
        assert removals is not None
        row = {**tomb.__dict__, "removed_at": datetime.now(UTC)}
        retry_conflicts(lambda: removals.add(pa.Table.from_pylist([row], schema=removals_schema())))
        table = self.table()
        if table is None:
            return 0
        objects = self._present(table, {(tomb.bucket, tomb.key)}).get((tomb.bucket, tomb.key), set())
        doomed = {o.object_id for o in objects if sweeps(tomb, o)}
        if tomb.object_id:
            doomed.add(tomb.object_id)  # rows of that object id, whatever key they carry
        deleted = self._delete_objects(table, doomed)
        log.info(
            "index_rows_removed",
            bucket=tomb.bucket,
            key=tomb.key,
            version=tomb.version,
            object_id=tomb.object_id,
            rows=deleted,
        )
        return deleted

    def dead(self, versions: dict[tuple[str, str], set[ObjectVersion]], object_ids: set[str]) -> set[str]:
        """Of these object versions (per bucket and key) and object ids, those this table's
        rows and tombstones declare dead: superseded by a newer version or removed."""
        table = self.table()
        keys = set(versions)
        present = self._present(table, keys) if table is not None and keys else {}
        tombs = self._tombstones(keys, object_ids | {o.object_id for vs in versions.values() for o in vs})
        dead = {t.object_id for ts in tombs.values() for t in ts if t.object_id}
        for bk, candidates in versions.items():
            dead |= dead_objects(candidates | present.get(bk, set()), tombs.get(bk, []))
        return dead

    # -- helpers ----------------------------------------------------------------------
    def _present(self, table: Any, keys: set[tuple[str, str]]) -> dict[tuple[str, str], set[ObjectVersion]]:
        """Object versions in the table per (bucket, key)."""
        found: dict[tuple[str, str], set[ObjectVersion]] = defaultdict(set)
        for where in _in_filters("key", (k for _, k in keys)):
            rows = table.search().where(where).select(["object_id", "bucket", "key", "version"]).limit(None)
            for r in rows.to_arrow().to_pylist():
                bk = (r["bucket"], r["key"])
                if bk in keys:
                    found[bk].add(ObjectVersion(r["object_id"], r["version"]))
        return found

    def _tombstones(self, keys: set[tuple[str, str]], object_ids: set[str]) -> dict[tuple[str, str], list[Tombstone]]:
        """Tombstones of these keys, plus those naming one of these object ids."""
        removals = self._removals_table(create=False)
        found: dict[tuple[str, str], list[Tombstone]] = defaultdict(list)
        if removals is None:
            return found
        wheres = _in_filters("key", (k for _, k in keys)) + _in_filters("object_id", object_ids)
        seen: set[Tombstone] = set()
        for where in wheres:
            for r in removals.search().where(where).limit(None).to_arrow().to_pylist():
                t = Tombstone(r["bucket"], r["key"], r["version"], r["object_id"])
                if t not in seen and ((t.bucket, t.key) in keys or t.object_id in object_ids):
                    seen.add(t)
                    found[(t.bucket, t.key)].append(t)
        return found

    def _reconcile(self, table: Any, keys: set[tuple[str, str]]) -> int:
        """After a commit: delete object versions of these keys that are now dead (a racing
        writer committed a newer version, or a removal landed meanwhile)."""
        present = self._present(table, keys)
        tombs = self._tombstones(keys, {o.object_id for objs in present.values() for o in objs})
        doomed: set[str] = set()
        for bk, objects in present.items():
            doomed |= dead_objects(objects, tombs.get(bk, []))
        return self._delete_objects(table, doomed)

    def _delete_objects(self, table: Any, object_ids: set[str]) -> int:
        """Delete these objects' rows, and their summaries (``workers.index.objects``)."""
        deleted = 0
        for where in _in_filters("object_id", object_ids):
            res = retry_conflicts(lambda w=where: table.delete(w))  # type: ignore[misc]
            deleted += int(getattr(res, "num_deleted_rows", 0) or 0)
        if object_ids:
            summaries = ObjectsTable(self.db(), self.settings)
            for chunk in _chunks(sorted(object_ids)):
                retry_conflicts(lambda c=chunk: summaries.delete(c))  # type: ignore[misc]
        return deleted


def retry_conflicts(action: Callable[[], T]) -> T:
    """``action``, tried again (with backoff) while its commit conflicts with another writer's."""
    for attempt in range(1, _CONFLICT_RETRIES + 1):
        try:
            return action()
        except Exception as exc:
            if attempt == _CONFLICT_RETRIES or not _CONFLICT.search(str(exc)):
                raise
            log.warning("index_commit_conflict", attempt=attempt, error=str(exc)[:300])
            time.sleep(0.05 * 2**attempt)
    raise AssertionError("unreachable")
