"""A user's bucket drives the pipeline: uploads with a plain S3 client (aiobotocore, no
capstream call) into SeaweedFS reach ``done`` through the filer's Kafka events, the S3 event
bridge and `capstream run`; an overwrite starts a second run; re-delivered events do nothing.

One private stack (its filer topic is not shared with other tests) and one worker process
(real offline vLLM engines on CPU) serve the three tests. Each test uploads under its own
key prefix and judges only its own objects and the counters' changes while it ran, so the
tests pass alone and in any order.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from loadtest.media_factory import make_image, make_short_clip
from schemas.events import ObjectCreated, parse_event
from schemas.progress import ObjectProgress, ObjectState
from schemas.segments import SegmentBatch
from tests.stack_s3 import stack_s3_client
from workers.cli.submit import wait_for
from workers.cli.worker_process import spawn_worker, stop_worker
from workers.localstack import StackEndpoints, start_stack, stop_stack
from workers.offline_profile import offline_env
from workers.runtime.kafka import read_topics
from workers.settings import BridgeSettings, DecodeSettings
from workers.state import EventCounts, RedisKeys

pytestmark = pytest.mark.integration

PREFIX = f"ingest{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def events_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackEndpoints]:
    data_dir = tmp_path_factory.mktemp("events-stack")
    endpoints = start_stack(data_dir)  # S3 events on by default
    try:
        yield endpoints
    finally:
        stop_stack(data_dir)


@pytest.fixture(scope="module")
def worker_env(events_stack: StackEndpoints) -> dict[str, str]:
    env = {
        **os.environ,
        **events_stack.env(),
        **offline_env(),
        "CAPSTREAM_KEY_PREFIX": PREFIX,
        "CAPSTREAM_SESSION_TIMEOUT_MS": "3000",
        "CAPSTREAM_LOG_LEVEL": "INFO",
        "CAPSTREAM_HOME": str(Path(events_stack.data_dir) / "no-home"),
    }
    assert env["CAPSTREAM_S3_EVENTS_BRIDGE"] == "true", "the local stack turns the bridge on"
    return env


@pytest.fixture(scope="module")
def worker(worker_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[subprocess.Popen[bytes]]:
    """`capstream run`: bridge + decode + caption + embed in one process, offline models."""
    log_path = tmp_path_factory.mktemp("ingest-worker") / "worker.log"
    proc = spawn_worker(["run"], worker_env, log_path)
    try:
        yield proc
    finally:
        stop_worker(proc)
        sys.stderr.write(log_path.read_text()[-3000:])


@pytest_asyncio.fixture
async def s3(events_stack: StackEndpoints) -> AsyncIterator[Any]:
    async with stack_s3_client(events_stack) as client:
        yield client


def _settings(env: dict[str, str]) -> DecodeSettings:
    keys = ("CAPSTREAM_KAFKA_BOOTSTRAP", "CAPSTREAM_REDIS_URL", "CAPSTREAM_KEY_PREFIX")
    return DecodeSettings(**{k.removeprefix("CAPSTREAM_").lower(): env[k] for k in keys})  # type: ignore[arg-type]


async def _records(bootstrap: str, topic: str) -> list[tuple[str, bytes]]:
    return [((r.key or b"").decode(), r.value or b"") for r in await read_topics(bootstrap, [topic])]


async def _bridged(settings: DecodeSettings, bucket: str, key: str, count: int) -> list[ObjectCreated]:
    """The ObjectCreated events the bridge published for ``bucket/key`` (waits for ``count``)."""
    for _ in range(60):
        found = [
            parse_event(v).objects[0]
            for k, v in await _records(settings.kafka_bootstrap, settings.topic_objects)
            if k == f"{bucket}/{key}"
        ]
        if len(found) >= count:
            return found
        await asyncio.sleep(0.5)
    raise AssertionError(f"the bridge published {len(found)} events for {key}, expected {count}")


async def _wait_done(settings: DecodeSettings, object_ids: list[str]) -> dict[str, ObjectProgress | None]:
    states = await wait_for(object_ids, {}, settings, timeout_s=150, show=False)
    for oid, prog in states.items():
        assert prog is not None and prog.state is ObjectState.DONE, (oid, prog)
        assert prog.segments_total and prog.embedded == prog.segments_total
    return states


async def test_plain_s3_uploads_reach_done(
    worker: subprocess.Popen[bytes], worker_env: dict[str, str], s3: Any, tmp_path: Path
) -> None:
    settings = _settings(worker_env)
    bucket, root = worker_env["CAPSTREAM_S3_BUCKET"], _root()
    bridge_before = await _counts(settings, "s3-events")
    clip, still = tmp_path / "clip.mp4", tmp_path / "cat photo.jpg"
    make_short_clip(clip, seconds=1.5)
    make_image(still, "JPEG")
    await s3.put_object(Bucket=bucket, Key=f"{root}/clip.mp4", Body=clip.read_bytes(), ContentType="video/mp4")
    await s3.put_object(Bucket=bucket, Key=f"{root}/cat photo.jpg", Body=still.read_bytes(), ContentType="image/jpeg")
    await s3.put_object(Bucket=bucket, Key=f"{root}/empty-folder/", Body=b"")  # a folder: no event
    await s3.put_object_tagging(  # metadata only: no new run
        Bucket=bucket, Key=f"{root}/clip.mp4", Tagging={"TagSet": [{"Key": "reviewed", "Value": "no"}]}
    )
    [clip_event] = await _bridged(settings, bucket, f"{root}/clip.mp4", 1)
    [still_event] = await _bridged(settings, bucket, f"{root}/cat photo.jpg", 1)
    assert clip_event.size == clip.stat().st_size and clip_event.source == "seaweedfs"
    assert clip_event.content_type == "video/mp4" and clip_event.etag and clip_event.sequencer
    await _wait_done(settings, [clip_event.object_id, still_event.object_id])
    assert worker.poll() is None

    for _ in range(40):  # the tagging event may trail the uploads' runs
        bridged = _changes(bridge_before, await _counts(settings, "s3-events"))
        if bridged.get("skipped:metadata_only"):
            break
        await asyncio.sleep(0.25)
    assert bridged.get("skipped:directory", 0) >= 1 and bridged.get("skipped:metadata_only") == 1, bridged
    assert bridged["forwarded"] == 2, bridged
    assert await _bridged(settings, bucket, f"{root}/clip.mp4", 1) == [clip_event], "tagging started a run"


async def test_overwrite_starts_a_second_run(
    worker: subprocess.Popen[bytes], worker_env: dict[str, str], s3: Any, tmp_path: Path
) -> None:
    settings = _settings(worker_env)
    first, second = await _two_versions(settings, s3, worker_env["CAPSTREAM_S3_BUCKET"], tmp_path)
    assert first.object_id != second.object_id
    segments = await _segments_by_object(settings)
    assert segments[first.object_id] and segments[second.object_id], "both versions were decoded"
    assert worker.poll() is None


async def test_redelivered_events_do_no_new_work(
    worker: subprocess.Popen[bytes], worker_env: dict[str, str], s3: Any, tmp_path: Path
) -> None:
    settings = _settings(worker_env)
    bucket = worker_env["CAPSTREAM_S3_BUCKET"]
    first, _ = await _two_versions(settings, s3, bucket, tmp_path)
    assert first.key is not None
    root = first.key.rpartition("/")[0]
    bridge = BridgeSettings(kafka_bootstrap=settings.kafka_bootstrap)
    segments_before = await _segments_by_object(settings)
    decode_before = await _counts(settings, "decode")
    # Re-deliver both layers for this test's key: weed's raw filer events, and the S3 events.
    filer = [
        (k, v)
        for k, v in await _records(settings.kafka_bootstrap, bridge.topic_filer_events)
        if k.startswith(f"/buckets/{bucket}/{root}/")
    ]
    s3_events = [
        (k, v)
        for k, v in await _records(settings.kafka_bootstrap, settings.topic_objects)
        if k.startswith(f"{bucket}/{root}/")
    ]
    assert len(s3_events) == 2, "the original and the overwrite"
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for topic, records in ((bridge.topic_filer_events, filer), (settings.topic_objects, s3_events)):
            for key, value in records:
                await producer.send_and_wait(topic, value, key=key.encode())
    finally:
        await producer.stop()

    # Each S3 event arrives twice more (bridge + direct): 4 events, all skipped.
    for _ in range(120):
        counts = _changes(decode_before, await _counts(settings, "decode"))
        if counts.get("duplicate", 0) + counts.get("stale", 0) >= 4:
            break
        await asyncio.sleep(0.5)
    assert counts.get("duplicate", 0) + counts.get("stale", 0) == 4, counts
    assert not counts.get("accepted"), "a re-delivered event started a run"
    assert counts.get("stale") == 2, "the first clip version is stale now"
    await asyncio.sleep(1.0)
    assert await _segments_by_object(settings) == segments_before
    assert worker.poll() is None


def _root() -> str:
    """This test's key prefix in the shared bucket."""
    return f"in-{uuid.uuid4().hex[:8]}"


def _changes(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: n - before.get(k, 0) for k, n in after.items() if n != before.get(k, 0)}


async def _two_versions(
    settings: DecodeSettings, s3: Any, bucket: str, tmp_path: Path
) -> tuple[ObjectCreated, ObjectCreated]:
    """Upload a clip, let it reach done, overwrite it with a longer one, let that reach done."""
    key = f"{_root()}/clip.mp4"
    clip, longer = tmp_path / "clip.mp4", tmp_path / "longer.mp4"
    make_short_clip(clip, seconds=1.5)
    make_short_clip(longer, seconds=2.5, size=(240, 160))
    await s3.put_object(Bucket=bucket, Key=key, Body=clip.read_bytes(), ContentType="video/mp4")
    [first] = await _bridged(settings, bucket, key, 1)
    await _wait_done(settings, [first.object_id])
    await s3.put_object(Bucket=bucket, Key=key, Body=longer.read_bytes(), ContentType="video/mp4")
    first_again, second = await _bridged(settings, bucket, key, 2)
    assert first_again == first and second.size == longer.stat().st_size
    await _wait_done(settings, [second.object_id])
    return first, second


async def _counts(settings: DecodeSettings, stage: str) -> dict[str, int]:
    redis = Redis.from_url(settings.redis_url)
    try:
        return await EventCounts(redis, RedisKeys(settings.key_prefix), stage).get()
    finally:
        await redis.aclose()


async def _segments_by_object(settings: DecodeSettings) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for _, value in await _records(settings.kafka_bootstrap, settings.topic_segments):
        batch = SegmentBatch.model_validate_json(value)
        out.setdefault(batch.object_id, []).append(batch.segment_id)
    return out
