"""``capstream reindex --from-scratch`` cannot lose the index: it builds a new generation,
checks it against the one in use, and only then switches the pointer the writers and the
searchers read.

Tansu applies no retention (records stamped an hour old, with ``retention.ms`` at 1 s, were
all still there after 5 s) and refuses DeleteRecords, so "retention removed the early
records" is made the only way this broker allows: the topic is deleted and created again with
the later half of its records, carrying their original timestamps, as retention would leave
them. The partitions then start at offset 0, so only the rebuild's check of its new table
against the index in use can notice the loss (``reach_problem``, the quick refusal from the
log start offsets, is tested on its own in tests/unit/test_reindex_reach.py).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from schemas.embeddings import Embedding
from tests.durable_stack import DurableStack, one_object_embeddings
from workers.cli.reindex import EXIT_REFUSED, cmd_reindex
from workers.index import reindex as reindex_module
from workers.index.generations import TablePointer
from workers.index.reindex import reindex
from workers.index.writer import SegmentIndex
from workers.runtime import kafka
from workers.runtime.kafka import ensure_topics
from workers.search.searcher import Searcher
from workers.settings import IndexSettings, SearchSettings

pytestmark = pytest.mark.integration
RECORDS = 600  # x ~8 KB of vector: more than one fetch, so the broker restart falls mid-read
DIM = 1000
HOUR_AGO_MS = int(time.time() * 1000) - 3_600_000


async def _produce(settings: IndexSettings, embeddings: list[Embedding], timestamp_ms: int | None = None) -> None:
    await ensure_topics(settings, [settings.topic_embeddings, settings.topic_removals])
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=20)
    await producer.start()
    try:
        sent = [
            await producer.send(
                settings.topic_embeddings, e.to_bytes(), key=e.object_id.encode(), timestamp_ms=timestamp_ms
            )
            for e in embeddings
        ]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def _recreate_topic(settings: IndexSettings) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([settings.topic_embeddings])
    finally:
        await admin.close()
    await ensure_topics(settings, [settings.topic_embeddings])


def _kill_mid_rebuild(monkeypatch: pytest.MonkeyPatch, first_fetch: asyncio.Event) -> None:
    """Arm the broker kill for the rebuild's own read: the test's first reindex fetched records
    too, and the rebuild's look at where the partitions start is left unobserved."""
    starts = reindex_module.partition_starts

    async def unobserved(*args: Any, **kwargs: Any) -> Any:
        observed = kafka.AIOKafkaConsumer
        kafka.AIOKafkaConsumer = AIOKafkaConsumer  # type: ignore[misc]
        try:
            return await starts(*args, **kwargs)
        finally:
            kafka.AIOKafkaConsumer = observed  # type: ignore[misc]

    monkeypatch.setattr(reindex_module, "partition_starts", unobserved)
    first_fetch.clear()


def _segment_ids(settings: IndexSettings) -> set[str]:
    table = SegmentIndex(settings).table()
    assert table is not None
    return set(table.search().select(["segment_id"]).limit(None).to_arrow().column("segment_id").to_pylist())


async def test_a_rebuild_from_topics_that_lost_records_is_refused_and_the_index_stays(
    durable_stack: DurableStack,
    durable_env: dict[str, str],
    first_fetch: asyncio.Event,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = IndexSettings()
    early = one_object_embeddings(RECORDS // 2, "early.mp4", DIM)
    late = one_object_embeddings(RECORDS // 2, "late.mp4", DIM)
    await _produce(settings, early + late, HOUR_AGO_MS)
    assert (await reindex(settings)).rows == RECORDS  # the index as the workers built it
    before = _segment_ids(settings)

    await _recreate_topic(settings)  # "retention": only the later records are left
    await _produce(settings, late, HOUR_AGO_MS)
    _kill_mid_rebuild(monkeypatch, first_fetch)
    code = await durable_stack.restart_broker_during(first_fetch, cmd_reindex(True, None, False))

    assert code == EXIT_REFUSED
    err = capsys.readouterr().err
    assert f"{RECORDS // 2} of the {RECORDS} rows" in err and "early.mp4" in err, err
    assert "untouched" in err
    assert _segment_ids(settings) == before
    index = SegmentIndex(settings)
    assert TablePointer(index.db(), settings).read() is None, "nothing was switched"
    assert index.db().table_names() == [settings.index_table], "the new generation was dropped"


async def test_a_rebuild_switches_only_with_every_row_and_catches_up_what_came_meanwhile(
    durable_stack: DurableStack,
    durable_env: dict[str, str],
    first_fetch: asyncio.Event,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = IndexSettings()
    await _produce(settings, one_object_embeddings(RECORDS, "a.mp4", DIM))
    assert (await reindex(settings)).rows == RECORDS
    # An index worker keeps writing while the rebuild runs: records that reach the topic after
    # the rebuild's read has ended land in the old table, and the catch-up brings them over.
    meanwhile = one_object_embeddings(5, "meanwhile.mp4", DIM)
    verify = reindex_module._verify

    def verify_then_a_worker_writes(*args: Any) -> int:
        checked = verify(*args)
        asyncio.run(_produce(settings, meanwhile))
        SegmentIndex(settings).write(meanwhile)  # follows the pointer: the old generation
        return checked

    monkeypatch.setattr(reindex_module, "_verify", verify_then_a_worker_writes)
    _kill_mid_rebuild(monkeypatch, first_fetch)
    counts = await durable_stack.restart_broker_during(first_fetch, reindex(settings, from_scratch=True))

    assert counts.verified_rows == RECORDS and counts.caught_up == len(meanwhile), counts
    assert counts.rows == RECORDS + len(meanwhile)
    assert counts.previous == settings.index_table and counts.table != settings.index_table
    everything = _segment_ids(settings)  # through the pointer: the new generation
    assert len(everything) == RECORDS + len(meanwhile)
    assert {e.segment_id for e in meanwhile} <= everything
    searcher = Searcher(SearchSettings())
    table = searcher.open_table()
    assert table is not None and table.name == counts.table and table.count_rows() == counts.rows

    again = await reindex(settings, from_scratch=True)  # the first generation is now stale
    assert again.previous == counts.table and again.dropped == [settings.index_table], again
    assert again.rows == counts.rows and _segment_ids(settings) == everything
