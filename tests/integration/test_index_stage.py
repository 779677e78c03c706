"""The index stage against the real stack: Tansu, and LanceDB on local disk and on SeaweedFS S3.

Embeddings are built directly (dim 8, no model); the stages run in ``StageLoop`` exactly as
``capstream worker index`` runs them.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from schemas.base import Message
from schemas.embeddings import Embedding
from schemas.events import ObjectRemoved, version_order
from schemas.ids import object_version_id
from workers.index.reindex import reindex
from workers.index.stage import IndexParts, IndexStage, RemovalStage
from workers.index.writer import SegmentIndex
from workers.localstack import StackEndpoints
from workers.runtime.kafka import ensure_topics
from workers.runtime.loop import StageLoop
from workers.settings import IndexSettings
from workers.state.dead_letter_log import read_letters

pytestmark = pytest.mark.integration

DIM = 8


def emb(key: str, sequencer: str, index: int, *, dim: int = DIM, version_id: str | None = None) -> Embedding:
    uri = f"s3://media/{key}"
    object_id = object_version_id(uri, f"v:{version_id}" if version_id else f"e:etag:{sequencer}")
    segment_id = str(uuid.uuid5(uuid.UUID(object_id), str(index)))
    return Embedding(
        object_id=object_id,
        segment_id=segment_id,
        segment_index=index,
        source_uri=uri,
        start_s=index * 2.0,
        end_s=index * 2.0 + 2,
        bucket="media",
        key=key,
        version=version_order(sequencer, None),
        thumbnail=b"\xff\xd8jpeg",
        embedding_id=str(uuid.uuid5(uuid.UUID(segment_id), "m")),
        caption=f"{key} version {sequencer} segment {index}",
        caption_model="cap",
        model="m",
        dim=dim,
        vector=[float(index + 1)] * dim,
    )


def index_settings(kind: str, unique: str, tmp_path: Path, **overrides: Any) -> IndexSettings:
    uri = f"s3://media/index-{unique}" if kind == "s3" else str(tmp_path / "index")
    defaults: dict[str, Any] = {
        "index_uri": uri,
        "topic_embeddings": f"embeddings-{unique}",
        "topic_removals": f"removals-{unique}",
        "index_group": f"index-{unique}",
        "index_removals_group": f"index-removals-{unique}",
        "index_batch_rows": 64,
        "index_batch_age_s": 0.3,
        "retry_backoff_s": 0.05,
        "outage_backoff_max_s": 0.5,
        "drain_timeout_s": 10,
    }
    return IndexSettings(**(defaults | overrides))


async def produce(settings: IndexSettings, topic: str, messages: Sequence[Message], key: Callable[[Any], str]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for m in messages:
            await producer.send_and_wait(topic, m.to_bytes(), key=key(m).encode())
    finally:
        await producer.stop()


async def produce_embeddings(settings: IndexSettings, embeddings: Sequence[Embedding]) -> None:
    await produce(settings, settings.topic_embeddings, embeddings, lambda e: e.object_id)


async def produce_removals(settings: IndexSettings, removals: Sequence[ObjectRemoved]) -> None:
    await produce(settings, settings.topic_removals, removals, lambda r: f"{r.bucket}/{r.key}")


async def eventually(check: Callable[[], Any], timeout_s: float = 40.0, what: str = "condition") -> Any:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        result = await check()
        if result:
            return result
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


def committed(loop: StageLoop[Any]) -> int:
    """Records of the loop's partitions whose offsets the broker acknowledged as committed."""
    return sum(po.committed or 0 for po in loop._offsets.values())


def rows(settings: IndexSettings) -> list[dict[str, Any]]:
    table = SegmentIndex(settings).table()
    return [] if table is None else table.to_arrow().to_pylist()


async def table_rows(settings: IndexSettings) -> list[dict[str, Any]]:
    return await asyncio.to_thread(rows, settings)


@asynccontextmanager
async def index_worker(settings: IndexSettings, *, removals: bool = True) -> AsyncIterator[list[StageLoop[Any]]]:
    """One index worker (its embeddings loop, and its removals loop), stopped and drained on exit."""
    parts = IndexParts(settings)
    loops: list[StageLoop[Any]] = [
        StageLoop(IndexStage(settings, parts), settings, settings.index_group, settings.index_max_in_flight)
    ]
    if removals:
        loops.append(StageLoop(RemovalStage(settings, parts), settings, settings.index_removals_group, 4))
    stop = asyncio.Event()
    tasks = [asyncio.create_task(sl.run(stop)) for sl in loops]
    try:
        yield loops
        for t in tasks:
            assert not t.done(), f"a stage stopped: {t.exception()}"
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 60)


@pytest.mark.parametrize("kind", ["local", "s3"])
async def test_redelivered_and_replayed_embeddings_make_one_row_each(
    stack_env: StackEndpoints, unique: str, tmp_path: Path, kind: str
) -> None:
    settings = index_settings(kind, unique, tmp_path)
    await ensure_topics(settings, [settings.topic_embeddings, settings.topic_removals])
    embeddings = [emb(f"clip{o}.mp4", "10", i) for o in range(3) for i in range(4)]
    # Every record twice: a producer retry / redelivery.
    await produce_embeddings(settings, embeddings + embeddings)
    async with index_worker(settings, removals=False) as (loop,):
        await eventually(lambda: _async(committed(loop) == 24), what="24 offsets committed")
    got = await table_rows(settings)
    assert sorted(r["segment_id"] for r in got) == sorted(e.segment_id for e in embeddings)
    one = next(r for r in got if r["segment_id"] == embeddings[0].segment_id)
    assert one["object_id"] == embeddings[0].object_id and one["key"] == "clip0.mp4" and one["bucket"] == "media"
    assert one["caption"] == embeddings[0].caption and one["embedding_model"] == "m" and one["caption_model"] == "cap"
    assert one["thumbnail"] == b"\xff\xd8jpeg" and len(one["vector"]) == DIM and one["uri"] == "s3://media/clip0.mp4"

    # A replay of the whole topic (a new group starts at offset 0, as after a lost commit).
    replay = settings.model_copy(update={"index_group": f"replay-{unique}"})
    async with index_worker(replay, removals=False) as (loop,):
        await eventually(lambda: _async(committed(loop) == 24), what="replay committed")
    assert len(await table_rows(settings)) == len(embeddings)


async def _async(value: Any) -> Any:
    return value


async def test_offsets_commit_only_after_rows_are_durable(
    stack_env: StackEndpoints, unique: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = index_settings("local", unique, tmp_path, index_batch_rows=10, index_batch_age_s=0.2)
    await ensure_topics(settings, [settings.topic_embeddings])
    embeddings = [emb(f"slow{o}.mp4", "10", i) for o in range(4) for i in range(10)]
    await produce_embeddings(settings, embeddings)
    write = SegmentIndex.write

    def slow_write(self: SegmentIndex, batch: Sequence[Embedding]) -> Any:
        import time

        time.sleep(0.7)  # a slow store: the loop keeps committing meanwhile
        return write(self, batch)

    monkeypatch.setattr(SegmentIndex, "write", slow_write)
    samples: list[tuple[int, int]] = []
    async with index_worker(settings, removals=False) as (loop,):

        async def sample() -> bool:
            done = committed(loop)  # read first: rows only grow, so rows >= rows at commit time
            samples.append((done, len(await table_rows(settings))))
            return done == len(embeddings)

        await eventually(sample, what="all committed")
    assert all(done <= n_rows for done, n_rows in samples), samples
    assert any(0 < done < len(embeddings) for done, _ in samples), "commits came in steps, as batches landed"


@pytest.mark.parametrize("kind", ["local"])
async def test_removals_and_new_versions_reach_the_index_and_reindex_rebuilds_it(
    stack_env: StackEndpoints, unique: str, tmp_path: Path, kind: str
) -> None:
    settings = index_settings(kind, unique, tmp_path)
    await ensure_topics(settings, [settings.topic_embeddings, settings.topic_removals])
    old_a = [emb("a.mp4", "10", i) for i in range(3)]  # a.mp4 is replaced by a new version
    new_a = [emb("a.mp4", "20", i) for i in range(2)]
    c = [emb("b.mp4", "10", i) for i in range(3)]  # b.mp4 is deleted, then uploaded again
    d = [emb("b.mp4", "30", 0)]
    e = [emb("c.mp4", "10", i, version_id="v1") for i in range(3)]  # one version of c.mp4 is deleted
    f = [emb("d.mp4", "05", 0, version_id="v1")]  # same version id, another key: stays
    await produce_embeddings(settings, old_a[:2] + c[:2] + e[:2] + f)
    async with index_worker(settings) as (loop, removal_loop):
        await eventually(lambda: _async(committed(loop) == 7), what="first embeddings")
        await produce_embeddings(settings, new_a)
        await eventually(lambda: _async(committed(loop) == 9), what="new version")
        assert {r["object_id"] for r in await table_rows(settings) if r["key"] == "a.mp4"} == {new_a[0].object_id}
        await produce_removals(
            settings,
            [
                ObjectRemoved(uri="s3://media/b.mp4", bucket="media", key="b.mp4", sequencer="15"),
                ObjectRemoved(uri="s3://media/c.mp4", bucket="media", key="c.mp4", version_id="v1", sequencer="16"),
            ],
        )
        await eventually(lambda: _async(committed(removal_loop) == 2), what="removals applied")
        # Late arrivals: the old version's last segment, the deleted versions' last segments.
        await produce_embeddings(settings, [old_a[2], c[2], e[2]])
        await eventually(lambda: _async(committed(loop) == 12), what="late embeddings")
        late = {r["segment_id"] for r in await table_rows(settings)} & {
            old_a[2].segment_id,
            c[2].segment_id,
            e[2].segment_id,
        }
        assert late == set(), "a removed or superseded version came back"
        await produce_embeddings(settings, d)  # b.mp4 uploaded again after its deletion
        await eventually(lambda: _async(committed(loop) == 13), what="re-upload")
    got = await table_rows(settings)
    by_key: dict[str, set[str]] = {}
    for r in got:
        by_key.setdefault(r["key"], set()).add(r["segment_id"])
    assert by_key.get("a.mp4") == {x.segment_id for x in new_a}, "only the new version of a.mp4"
    assert by_key.get("b.mp4") == {d[0].segment_id}, "deleted version gone, re-upload indexed"
    assert "c.mp4" not in by_key, "the deleted version of c.mp4 did not come back"
    assert by_key.get("d.mp4") == {f[0].segment_id}

    # The topics are the source of truth: a rebuild from scratch gives the same rows.
    counts = await reindex(settings, from_scratch=True)
    assert counts.removals == 2 and counts.embeddings == 13 and counts.rows == len(got), counts
    assert sorted(r["segment_id"] for r in await table_rows(settings)) == sorted(r["segment_id"] for r in got)


async def test_two_index_workers_on_one_s3_table_lose_nothing(
    stack_env: StackEndpoints, unique: str, tmp_path: Path
) -> None:
    settings = index_settings("s3", unique, tmp_path, index_batch_rows=8, index_batch_age_s=0.1)
    await ensure_topics(settings, [settings.topic_embeddings, settings.topic_removals])
    embeddings = [emb(f"many{o}.mp4", "10", i) for o in range(24) for i in range(5)]
    await produce_embeddings(settings, embeddings)
    async with index_worker(settings, removals=False) as (a,), index_worker(settings, removals=False) as (b,):

        async def all_done() -> bool:
            return committed(a) + committed(b) >= len(embeddings) and a.metrics.records > 0 and b.metrics.records > 0

        await eventually(all_done, timeout_s=90, what="both workers committed everything")
    got = await table_rows(settings)
    assert len(got) == len(embeddings)
    assert {r["segment_id"] for r in got} == {e.segment_id for e in embeddings}


async def test_dim_mismatch_is_dead_lettered_and_the_rest_is_indexed(
    stack_env: StackEndpoints, unique: str, tmp_path: Path
) -> None:
    settings = index_settings("local", unique, tmp_path)
    await ensure_topics(settings, [settings.topic_embeddings, f"{settings.topic_embeddings}.dlq"])
    good = [emb("dim.mp4", "10", i) for i in range(3)]
    bad = emb("other.mp4", "10", 0, dim=4)
    await produce_embeddings(settings, good[:1])
    async with index_worker(settings, removals=False) as (loop,):
        await eventually(lambda: _async(committed(loop) == 1), what="table created at dim 8")
        await produce_embeddings(settings, [bad, *good[1:]])
        await eventually(lambda: _async(committed(loop) == 4), what="all records finished")
    letters = [s.letter for s in await read_letters(settings) if s.letter.stage == "index"]
    assert [(x.reason, x.kind, x.segment_id, x.object_id) for x in letters] == [
        ("dim_mismatch", "permanent", bad.segment_id, bad.object_id)
    ]
    assert "CAPSTREAM_INDEX_TABLE" in letters[0].message and "capstream reindex" in letters[0].message
    assert {r["segment_id"] for r in await table_rows(settings)} == {g.segment_id for g in good}


async def test_an_unreachable_table_makes_the_worker_wait_without_dead_letters(
    stack_env: StackEndpoints, unique: str, tmp_path: Path
) -> None:
    settings = index_settings("s3", unique, tmp_path, s3_endpoint_url="http://127.0.0.1:9")  # nothing listens
    await ensure_topics(settings, [settings.topic_embeddings, f"{settings.topic_embeddings}.dlq"])
    await produce_embeddings(settings, [emb("down.mp4", "10", i) for i in range(3)])
    async with index_worker(settings, removals=False) as (loop,):
        await eventually(lambda: _async(loop.metrics.outage_waits >= 3), timeout_s=60, what="outage waits")
        assert committed(loop) == 0
        assert loop.metrics.dead_letters == 0 and loop.metrics.retries == 0
    assert [s for s in await read_letters(settings) if s.letter.stage == "index"] == []
