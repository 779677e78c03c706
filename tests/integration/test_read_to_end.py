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

import pytest
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from loadtest.chaos.collect import collect
from schemas.dead_letter import DeadLetter
from schemas.ids import segment_id
from tests.durable_stack import DurableStack, one_object_embeddings
from workers.index.reindex import reindex
from workers.runtime.kafka import ensure_topics
from workers.settings import DecodeSettings, IndexSettings
from workers.stages import REGISTRY
from workers.state.dead_letter_log import read_letters
from workers.state.reconcile import Reconciler

pytestmark = pytest.mark.integration
RECORDS = 800  # x ~16 KB: ~13 MB on 4 partitions, three times what the consumer prefetches
FILLER = 16_000


async def _produce(durable_env: dict[str, str], topic: str, values: list[bytes]) -> None:
    settings = DecodeSettings()
    await ensure_topics(settings, [*REGISTRY.topics(settings), topic])
    producer = AIOKafkaProducer(bootstrap_servers=durable_env["CAPSTREAM_KAFKA_BOOTSTRAP"], acks="all", linger_ms=20)
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
    durable_stack: DurableStack, durable_env: dict[str, str], first_fetch: asyncio.Event
) -> None:
    settings = DecodeSettings()
    await _produce(durable_env, settings.topic_segments, _segments(RECORDS))
    redis = Redis.from_url(settings.redis_url)
    try:
        counts = await durable_stack.restart_broker_during(first_fetch, Reconciler(settings, redis).run())
    finally:
        await redis.aclose()
    assert (counts.segments, counts.totals, counts.malformed) == (RECORDS, 1, 0)


async def test_reindex_reads_every_record(
    durable_stack: DurableStack, durable_env: dict[str, str], first_fetch: asyncio.Event
) -> None:
    settings = IndexSettings()
    embeddings = [e.to_bytes() for e in one_object_embeddings(RECORDS, "long.mp4", FILLER // 20)]
    await _produce(durable_env, settings.topic_embeddings, embeddings)
    counts = await durable_stack.restart_broker_during(first_fetch, reindex(settings))
    assert (counts.embeddings, counts.written, counts.rows, counts.malformed) == (RECORDS, RECORDS, RECORDS, 0)


async def test_dlq_list_reads_every_letter(
    durable_stack: DurableStack, durable_env: dict[str, str], first_fetch: asyncio.Event
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
            source_topic=durable_env["CAPSTREAM_TOPIC_FILER_EVENTS"],
            partition=0,
            offset=i,
            payload=b"\x00" * (FILLER * 3 // 4),  # base64 in JSON: ~FILLER bytes
        ).to_bytes()
        for i in range(RECORDS)
    ]
    # The bridge's DLQ: the one `capstream dlq` used to miss.
    await _produce(durable_env, durable_env["CAPSTREAM_TOPIC_FILER_EVENTS"] + ".dlq", letters)
    read = await durable_stack.restart_broker_during(first_fetch, read_letters(settings))
    assert len(read) == RECORDS
    assert sorted(s.letter.offset for s in read) == list(range(RECORDS))


async def test_chaos_collector_reads_every_record(
    durable_stack: DurableStack, durable_env: dict[str, str], first_fetch: asyncio.Event
) -> None:
    settings = IndexSettings()
    await _produce(durable_env, settings.topic_segments, _segments(RECORDS))
    seen = await durable_stack.restart_broker_during(first_fetch, collect(settings, [], durable_env))
    assert len(seen.outputs["decode"]) == RECORDS
