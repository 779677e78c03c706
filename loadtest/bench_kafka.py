"""Kafka plumbing of the stage benchmarks: fresh topics, records placed on chosen partitions,
and reading a topic until it holds what the workers were asked to produce."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord

from workers.runtime.kafka import dlq_topic, ensure_topics
from workers.settings import CommonSettings


@dataclass(frozen=True)
class Placed:
    """One record for an explicit partition: keys alone could hash two objects to one partition
    and leave a worker idle, which would measure the hash rather than the stage."""

    partition: int
    key: bytes
    value: bytes


def fresh_name(prefix: str) -> str:
    return f"bench-{prefix}-{uuid.uuid4().hex[:8]}"


async def create_topics(settings: CommonSettings, topics: Sequence[str]) -> None:
    """``topics`` and their dead-letter topics, with ``settings.topic_partitions`` partitions."""
    await ensure_topics(settings, [*topics, *(dlq_topic(t) for t in topics)])


async def produce_placed(bootstrap: str, topic: str, records: Sequence[Placed], max_request_bytes: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=max_request_bytes)
    await producer.start()
    try:
        sends = [await producer.send(topic, r.value, key=r.key, partition=r.partition) for r in records]
        await asyncio.gather(*sends)
    finally:
        await producer.stop()


async def read_until(
    bootstrap: str,
    topic: str,
    expect: int,
    timeout_s: float,
    check: Callable[[], None] = lambda: None,
    max_fetch_bytes: int = 52_428_800,
) -> list[ConsumerRecord[bytes, bytes]]:
    """Records of ``topic`` from the start until ``expect`` arrived; ``check`` runs between
    fetches (it raises when a worker died, so a crash ends the wait at once)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_bytes=max_fetch_bytes,
        max_partition_fetch_bytes=max_fetch_bytes,
    )
    await consumer.start()
    try:
        records: list[ConsumerRecord[bytes, bytes]] = []
        deadline = asyncio.get_running_loop().time() + timeout_s
        while len(records) < expect:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{topic}: {len(records)} of {expect} records after {timeout_s:g} s")
            check()
            batch = await consumer.getmany(timeout_ms=200)
            records += [r for recs in batch.values() for r in recs]
        return records
    finally:
        await consumer.stop()
