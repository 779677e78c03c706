"""Kafka clients configured one way for every stage."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import NamedTuple

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

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


async def read_to_end(
    bootstrap: str,
    topics: list[str],
    batch_records: int = 500,
    start: Mapping[TopicPartition, int] | None = None,
) -> AsyncIterator[list[ConsumerRecord[bytes, bytes]]]:
    """Every record of ``topics`` (those that exist) from the beginning (or, for the partitions
    in ``start``, from that offset), in batches, until a fetch brings nothing and every
    partition's position has reached its end offset, asked again at that moment. No consumer
    group: the workers' offsets are untouched.

    The one way capstream reads a topic whole (reconcile, reindex, ``capstream dlq``, the
    chaos collector). Not "until no record came for a while": a fetch comes back empty while
    the broker is down or restarting, and a reader that stopped there lost the rest
    (tests/integration/test_read_to_end.py). Not only up to the end offsets asked at the
    start either: a broker just restarted (Tansu on S3 storage, seen in the chaos run's
    wipe-Redis variant) can answer low end offsets, and a reconcile that stopped there read 0
    of ~270 segments. Tansu's S3 engine answers ListOffsets stale (seen: 1 per partition for
    ~250 records) while its fetch responses carry the true high watermark, so the end is the
    larger of the two. Records appended meanwhile are read too; every caller's effects are
    idempotent.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        existing = await consumer.topics()  # fetches the cluster's metadata
        tps = [TopicPartition(t, p) for t in topics if t in existing for p in consumer.partitions_for_topic(t) or ()]
        if not tps:
            return
        consumer.assign(tps)
        start = start or {}
        if from_beginning := [tp for tp in tps if tp not in start]:
            await consumer.seek_to_beginning(*from_beginning)
        for tp in tps:
            if tp in start:
                consumer.seek(tp, start[tp])
        while True:
            fetched = await consumer.getmany(timeout_ms=1000, max_records=batch_records)
            records = [r for recs in fetched.values() for r in recs]
            if records:
                yield records
                continue
            ends = await consumer.end_offsets(tps)  # waits out a broker that is down
            positions = [await consumer.position(tp) for tp in tps]
            if all(pos >= max(ends[tp], consumer.highwater(tp) or 0) for pos, tp in zip(positions, tps, strict=True)):
                return
    finally:
        await consumer.stop()


class PartitionStart(NamedTuple):
    offset: int  # the log start offset: above 0 once retention (or a delete) removed records
    timestamp_ms: int | None  # of the record there; None when the partition holds none


async def partition_starts(bootstrap: str, topic: str, wait_s: float = 30.0) -> dict[int, PartitionStart]:
    """Per partition of ``topic``: where its log starts now and when that record was written.
    Tells how far back the topic reaches after retention."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not tps:
            return {}
        consumer.assign(tps)
        begins, ends = await consumer.beginning_offsets(tps), await consumer.end_offsets(tps)
        starts: dict[int, PartitionStart] = {}
        for tp in tps:
            starts[tp.partition] = PartitionStart(begins[tp], None)
            if ends[tp] <= begins[tp]:
                continue
            consumer.seek(tp, begins[tp])
            fetched = await consumer.getmany(tp, timeout_ms=int(wait_s * 1000), max_records=1)
            if not (records := fetched.get(tp, [])):
                raise TimeoutError(f"{topic}[{tp.partition}] holds records but none came within {wait_s} s")
            starts[tp.partition] = PartitionStart(records[0].offset, records[0].timestamp)
        return starts
    finally:
        await consumer.stop()


async def read_topics(bootstrap: str, topics: list[str]) -> list[ConsumerRecord[bytes, bytes]]:
    """``read_to_end``, collected: for small topics (dead letters, tests)."""
    return [r async for batch in read_to_end(bootstrap, topics) for r in batch]


def dlq_topic(topic: str) -> str:
    return f"{topic}.dlq"


async def ensure_topics(
    settings: CommonSettings, topics: list[str], configs: Mapping[str, Mapping[str, str]] | None = None
) -> None:
    """Create missing topics, each with its ``configs`` (retention: the pipeline's come from
    ``workers.stages.ensure_pipeline_topics``). Production clusters usually pre-create them;
    then this creates nothing, and it logs ``topic_configs_differ`` for an existing topic whose
    broker-side configs differ from ``configs`` (a record topic left at the broker's 7-day
    default loses what Redis and the index are rebuilt from)."""
    configs = configs or {}
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in dict.fromkeys(topics) if t not in existing]
        if missing:
            try:
                await admin.create_topics(
                    [
                        NewTopic(
                            name=t,
                            num_partitions=settings.topic_partitions,
                            replication_factor=settings.topic_replication,
                            topic_configs=dict(configs.get(t, {})),
                        )
                        for t in missing
                    ]
                )
            except TopicAlreadyExistsError:
                pass  # another worker won the race
            log.info("topics_created", topics=missing, partitions=settings.topic_partitions)
        await _warn_config_drift(admin, {t: configs[t] for t in topics if t in existing and t in configs})
    finally:
        await admin.close()


async def topic_configs(admin: AIOKafkaAdminClient, topics: list[str]) -> dict[str, dict[str, str]]:
    """Each topic's configs as the broker states them (DescribeConfigs)."""
    if not topics:
        return {}
    responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, t) for t in topics])
    found: dict[str, dict[str, str]] = {}
    for response in responses:
        for error_code, _message, _type, name, entries in response.resources:
            if error_code == 0:
                found[name] = {entry[0]: entry[1] for entry in entries if entry[1] is not None}
    return found


async def _warn_config_drift(admin: AIOKafkaAdminClient, wanted: Mapping[str, Mapping[str, str]]) -> None:
    try:
        actual = await topic_configs(admin, list(wanted))
    except KafkaError as exc:  # a broker that cannot describe configs: nothing to compare
        log.warning("topic_configs_unknown", error=repr(exc))
        return
    for topic, want in wanted.items():
        have = actual.get(topic, {})
        # An unstated value is the broker's default: wrong only where the topic must never expire.
        differ = {k: have.get(k) for k, v in want.items() if have.get(k) != v and (k in have or v == "-1")}
        if differ:
            log.error("topic_configs_differ", topic=topic, broker=differ, declared=dict(want))
