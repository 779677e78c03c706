"""The local stack really runs: Kafka round trip, Redis, S3, clean stop, durable broker restart."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from tests.stack_s3 import stack_s3_client
from workers.localstack import (
    StackEndpoints,
    is_process_alive,
    kill_broker,
    read_stack,
    start_broker,
    start_stack,
    stop_stack,
)

pytestmark = pytest.mark.integration


async def _produce(bootstrap: str, topic: str, key: bytes, value: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value=value, key=key)
    finally:
        await producer.stop()


async def _consume_one(bootstrap: str, topic: str, group: str, wait_s: float = 30.0) -> tuple[bytes, bytes]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    await consumer.start()
    try:
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    assert record.key is not None and record.value is not None
                    await consumer.commit()
                    return record.key, record.value
        raise AssertionError(f"no message on {topic} within {wait_s} s")
    finally:
        await consumer.stop()


async def _check_redis(url: str) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        assert await client.ping()
        await client.set("capstream:test", "ok")
        assert await client.get("capstream:test") == b"ok"
    finally:
        await client.aclose()


async def _check_s3(ep: StackEndpoints) -> None:
    async with stack_s3_client(ep) as s3:
        body = b"hello capstream " * 1000
        await s3.put_object(Bucket=ep.bucket, Key="dir/a b.txt", Body=body)
        obj = await s3.get_object(Bucket=ep.bucket, Key="dir/a b.txt")
        async with obj["Body"] as stream:
            assert await stream.read() == body
    # a wrong secret is rejected (real S3 auth, not a mock)
    async with stack_s3_client(ep, secret_key="wrong-secret") as bad:
        with pytest.raises(Exception, match="(?i)signature|denied|forbidden"):
            await bad.get_object(Bucket=ep.bucket, Key="dir/a b.txt")


def test_stack_round_trip_and_clean_stop(tmp_path: Path) -> None:
    t0 = time.monotonic()
    ep = start_stack(tmp_path / "stack")
    started_in = time.monotonic() - t0
    try:
        assert started_in < 60
        assert read_stack(tmp_path / "stack") == ep
        assert (tmp_path / "stack" / "stack.json").is_file()
        env = ep.env()
        assert env["CAPSTREAM_KAFKA_BOOTSTRAP"] == ep.kafka_bootstrap
        assert env["AWS_DEFAULT_REGION"] == "us-east-1"
        assert set(env) == {
            "CAPSTREAM_KAFKA_BOOTSTRAP",
            "CAPSTREAM_REDIS_URL",
            "CAPSTREAM_S3_ENDPOINT_URL",
            "CAPSTREAM_S3_BUCKET",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_DEFAULT_REGION",
            "CAPSTREAM_INDEX_URI",  # the search index lives with the stack's data
            # SeaweedFS publishes bucket events; `capstream run` bridges them
            "CAPSTREAM_TOPIC_FILER_EVENTS",
            "CAPSTREAM_S3_EVENTS_BRIDGE",
        }
        assert env["CAPSTREAM_INDEX_URI"] == str(tmp_path.resolve() / "stack" / "index")
        assert (tmp_path / "stack" / "s3" / "notification.toml").is_file()
        # everything on loopback
        for url in (ep.kafka_bootstrap, ep.redis_url, ep.s3_endpoint_url):
            assert "127.0.0.1:" in url

        topic = f"t-{uuid.uuid4().hex[:8]}"

        async def main() -> None:
            await _produce(ep.kafka_bootstrap, topic, b"k1", b"v1")
            assert await _consume_one(ep.kafka_bootstrap, topic, "g1") == (b"k1", b"v1")
            await _check_redis(ep.redis_url)
            await _check_s3(ep)

        asyncio.run(main())
    finally:
        pids = dict(ep.pids)
        assert stop_stack(tmp_path / "stack") is True
    assert not any(is_process_alive(pid) for pid in pids.values())
    assert not (tmp_path / "stack" / "stack.json").exists()
    assert read_stack(tmp_path / "stack") is None
    assert stop_stack(tmp_path / "stack") is False


def test_durable_broker_survives_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "durable"
    ep = start_stack(data_dir, durable_kafka=True)
    try:
        assert ep.kafka_storage_engine == "s3://media-kafka/"
        topic = f"d-{uuid.uuid4().hex[:8]}"
        asyncio.run(_produce(ep.kafka_bootstrap, topic, b"key", b"survives"))

        old_pid = ep.pids["kafka"]
        assert kill_broker(ep)  # SIGKILL: nothing gets flushed on the way out
        assert not is_process_alive(old_pid)
        assert read_stack(data_dir) is None  # a process of the stack is down
        ep = start_broker(ep)
        assert ep.pids["kafka"] != old_pid
        assert read_stack(data_dir) == ep  # stack.json updated with the new pid

        assert asyncio.run(_consume_one(ep.kafka_bootstrap, topic, "g-durable")) == (b"key", b"survives")
    finally:
        pids = dict(ep.pids)
        stop_stack(data_dir)
    assert not any(is_process_alive(pid) for pid in pids.values())
