"""Every caller of the one topic reader (``read_to_end``) reads every record although the broker
is killed (-9) mid-read and restarted on its durable storage.

A reader that stops when a fetch comes back empty for a while (the rule reindex, ``capstream
dlq`` and the chaos collector had) loses what it had not fetched yet: while the broker is down
every fetch is empty. The kill comes right after the caller's first fetched batch (observed
through the consumer class, not timed), and each topic holds more than one fetch buffers
(about 1 MiB per partition), so the rest can only come from the restarted broker.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from redis.asyncio import Redis

from loadtest.chaos.collect import collect
from schemas.dead_letter import DeadLetter
from schemas.embeddings import Embedding
from schemas.ids import embedding_id, segment_id
from workers.index.reindex import reindex
from workers.localstack import StackEndpoints, kill_broker, start_broker, start_stack, stop_stack
from workers.runtime import kafka
from workers.runtime.kafka import ensure_topics
from workers.settings import DecodeSettings, IndexSettings
from workers.stages import REGISTRY
from workers.state.dead_letter_log import read_letters
from workers.state.reconcile import Reconciler

pytestmark = pytest.mark.integration
RECORDS = 800  # x ~16 KB: ~13 MB on 4 partitions, three times what the consumer prefetches
FILLER = 16_000
OUTAGE_S = 4.0  # longer than any idle gap a reader might wait out (they used 1.5-3 s)
T = TypeVar("T")


@dataclass
class DurableStack:
    """A stack of the module's own (its broker gets killed), the broker storing on the S3 store."""

    endpoints: StackEndpoints

    async def restart_broker_during(self, first_fetch: asyncio.Event, reading: Awaitable[T]) -> T:
        task = asyncio.ensure_future(reading)
        await asyncio.wait_for(first_fetch.wait(), 60)
        assert kill_broker(self.endpoints), "the broker was not running: no outage"
        await asyncio.sleep(OUTAGE_S)
        self.endpoints = await asyncio.to_thread(start_broker, self.endpoints)  # a new pid
        return await asyncio.wait_for(task, 300)


@pytest.fixture(scope="module")
def durable_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DurableStack]:
    data_dir = tmp_path_factory.mktemp("durable-stack")
    stack = DurableStack(start_stack(data_dir, durable_kafka=True))
    try:
        yield stack
    finally:
        stop_stack(data_dir)


@pytest.fixture
def env(durable_stack: DurableStack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """Settings pointed at the durable stack, with topics of this test's own."""
    suffix = uuid.uuid4().hex[:8]
    values = {
        **durable_stack.endpoints.env(),
        "CAPSTREAM_KEY_PREFIX": f"t{suffix}",
        "CAPSTREAM_INDEX_URI": str(tmp_path / "index"),
        **{f"CAPSTREAM_TOPIC_{t}": f"{t.lower()}-{suffix}" for t in ("OBJECTS", "SEGMENTS", "CAPTIONS", "EMBEDDINGS")},
        "CAPSTREAM_TOPIC_REMOVALS": f"removals-{suffix}",
        "CAPSTREAM_TOPIC_FILER_EVENTS": f"filer-{suffix}",
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values


@pytest.fixture
def first_fetch(monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Set when the reader's consumer has fetched its first records."""
    fetched = asyncio.Event()

    class Observed(AIOKafkaConsumer):
        async def getmany(self, *partitions: Any, timeout_ms: int = 0, max_records: int | None = None) -> Any:
            batch = await super().getmany(*partitions, timeout_ms=timeout_ms, max_records=max_records)
            if batch:
                fetched.set()
            return batch

    monkeypatch.setattr(kafka, "AIOKafkaConsumer", Observed)
    return fetched


async def _produce(env: dict[str, str], topic: str, values: list[bytes]) -> None:
    settings = DecodeSettings()
    await ensure_topics(settings, [*REGISTRY.topics(settings), topic])
    producer = AIOKafkaProducer(bootstrap_servers=env["CAPSTREAM_KAFKA_BOOTSTRAP"], acks="all", linger_ms=20)
    await producer.start()
    try:
        sent = [await producer.send(topic, v, key=str(i % 16).encode()) for i, v in enumerate(values)]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


def _segments(n: int) -> list[bytes]:
    """Segment-like records: the fields reconcile and the chaos collector read, plus bulk."""
    object_id = str(uuid.uuid4())
    return [
        json.dumps(
            {
                "object_id": object_id,
                "segment_id": segment_id(object_id, i),
                "segment_index": i,
                "source_uri": "s3://media/long.mp4",
                "start_s": float(i),
                "end_s": float(i + 1),
                "reason": "end" if i == n - 1 else "cut",
                "frames": "x" * FILLER,
            }
        ).encode()
        for i in range(n)
    ]


async def test_reconcile_reads_every_record(
    durable_stack: DurableStack, env: dict[str, str], first_fetch: asyncio.Event
) -> None:
    settings = DecodeSettings()
    await _produce(env, settings.topic_segments, _segments(RECORDS))
    redis = Redis.from_url(settings.redis_url)
    try:
        counts = await durable_stack.restart_broker_during(first_fetch, Reconciler(settings, redis).run())
    finally:
        await redis.aclose()
    assert (counts.segments, counts.totals, counts.malformed) == (RECORDS, 1, 0)


async def test_reindex_reads_every_record(
    durable_stack: DurableStack, env: dict[str, str], first_fetch: asyncio.Event
) -> None:
    settings = IndexSettings()
    object_id = str(uuid.uuid4())
    dim = FILLER // 20
    embeddings = [
        Embedding(
            object_id=object_id,
            segment_id=(sid := segment_id(object_id, i)),
            segment_index=i,
            source_uri="s3://media/long.mp4",
            start_s=float(i),
            end_s=float(i + 1),
            embedding_id=embedding_id(sid, "e"),
            caption=f"moment {i}",
            caption_model="m",
            model="e",
            dim=dim,
            vector=[1.0 / (j + 1 + i) for j in range(dim)],
        ).to_bytes()
        for i in range(RECORDS)
    ]
    await _produce(env, settings.topic_embeddings, embeddings)
    counts = await durable_stack.restart_broker_during(first_fetch, reindex(settings))
    assert (counts.embeddings, counts.written, counts.rows, counts.malformed) == (RECORDS, RECORDS, RECORDS, 0)


async def test_dlq_list_reads_every_letter(
    durable_stack: DurableStack, env: dict[str, str], first_fetch: asyncio.Event
) -> None:
    settings = DecodeSettings()
    letters = [
        DeadLetter(
            stage="s3-events",
            reason="malformed_filer_event",
            kind="permanent",
            error_class="FilerProtoError",
            message="not a SeaweedFS EventNotification",
            attempts=1,
            source_topic=env["CAPSTREAM_TOPIC_FILER_EVENTS"],
            partition=0,
            offset=i,
            payload=b"\x00" * (FILLER * 3 // 4),  # base64 in JSON: ~FILLER bytes
        ).to_bytes()
        for i in range(RECORDS)
    ]
    # The bridge's DLQ: the one `capstream dlq` used to miss.
    await _produce(env, env["CAPSTREAM_TOPIC_FILER_EVENTS"] + ".dlq", letters)
    read = await durable_stack.restart_broker_during(first_fetch, read_letters(settings))
    assert len(read) == RECORDS
    assert sorted(s.letter.offset for s in read) == list(range(RECORDS))


async def test_chaos_collector_reads_every_record(
    durable_stack: DurableStack, env: dict[str, str], first_fetch: asyncio.Event
) -> None:
    settings = IndexSettings()
    await _produce(env, settings.topic_segments, _segments(RECORDS))
    seen = await durable_stack.restart_broker_during(first_fetch, collect(settings, [], env))
    assert len(seen.outputs["decode"]) == RECORDS
