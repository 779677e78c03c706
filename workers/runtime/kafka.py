"""Kafka clients configured one way for every stage."""

from __future__ import annotations

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from workers.settings import CommonSettings

log = structlog.get_logger(__name__)

# Headroom for record/batch framing on top of the payload size budget.
_FRAMING_BYTES = 64 * 1024


def make_producer(settings: CommonSettings) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        acks="all",
        enable_idempotence=settings.producer_idempotence,
        max_request_size=settings.max_message_bytes + _FRAMING_BYTES,
        linger_ms=5,
        request_timeout_ms=30_000,
    )


def make_consumer(settings: CommonSettings, group_id: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=max(settings.session_timeout_ms // 5, 100),
        max_partition_fetch_bytes=settings.max_message_bytes + _FRAMING_BYTES,
        fetch_max_bytes=max(52_428_800, settings.max_message_bytes * 4),
    )


async def read_topics(bootstrap: str, topics: list[str], idle_ms: int = 1500) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topics`` from the beginning, until no record arrives for ``idle_ms``
    (for inspection tools and tests; workers use consumer groups)."""
    consumer = AIOKafkaConsumer(
        *topics, bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        records: list[ConsumerRecord[bytes, bytes]] = []
        while batch := await consumer.getmany(timeout_ms=idle_ms):
            records += [r for recs in batch.values() for r in recs]
        return records
    finally:
        await consumer.stop()


def dlq_topic(topic: str) -> str:
    return f"{topic}.dlq"


def stage_input_topics(settings: CommonSettings) -> list[str]:
    """Every topic a stage consumes; each has a dead-letter topic."""
    return [
        settings.topic_objects,
        settings.topic_segments,
        settings.topic_captions,
        settings.topic_embeddings,
        settings.topic_removals,
    ]


def pipeline_topics(settings: CommonSettings) -> list[str]:
    inputs = stage_input_topics(settings)
    return inputs + [dlq_topic(t) for t in inputs]


async def ensure_topics(settings: CommonSettings, topics: list[str] | None = None) -> None:
    """Create missing topics (production clusters usually pre-create them; then this is a no-op)."""
    wanted = topics or pipeline_topics(settings)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in wanted if t not in existing]
        if missing:
            try:
                await admin.create_topics(
                    [
                        NewTopic(
                            name=t,
                            num_partitions=settings.topic_partitions,
                            replication_factor=settings.topic_replication,
                        )
                        for t in missing
                    ]
                )
            except TopicAlreadyExistsError:
                pass  # another worker won the race
            log.info("topics_created", topics=missing, partitions=settings.topic_partitions)
    finally:
        await admin.close()
