"""`capstream reconcile` rebuilds Redis from the topics after Redis lost its data.

The topics hold four objects in different states; Redis holds nothing (a fresh key prefix is a
wiped Redis to every worker). Reconciling must bring back exactly what the topics say: the
finished object `done` with its result rows, the object in flight at its real counters (so its
finished segments are skipped and it still reaches `done`), the dead-lettered one `failed`, the
half-decoded one without a claim (its redelivered event must decode it again), and reconciling
twice changes nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from loadtest.reconcile_bench import jpeg, segment
from schemas.base import Message
from schemas.captions import Caption
from schemas.dead_letter import DeadLetter
from schemas.embeddings import Embedding
from schemas.ids import embedding_id
from schemas.progress import ObjectState
from schemas.segments import SegmentBatch, SegmentReason
from workers.localstack import StackEndpoints
from workers.runtime.kafka import dlq_topic, ensure_topics
from workers.settings import DecodeSettings
from workers.stages import REGISTRY
from workers.state import ClaimOutcome, ClaimStore, ProgressStore, RedisKeys, ResultStore, SequencerOutcome
from workers.state.results import ResultRow
from workers.state.sequencers import SequencerStore

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _segment(object_id: str, index: int, reason: SegmentReason, key: str) -> SegmentBatch:
    return segment(object_id, index, reason, key, "0" * 28 + "00AB", jpeg())


def _caption(seg: SegmentBatch) -> Caption:
    return Caption(**seg.segment_ref(), frame_pts=[seg.start_s], text="a cat", model="m", backend="vllm", latency_s=0.1)


def _embedding(seg: SegmentBatch) -> Embedding:
    return Embedding(
        **seg.segment_ref(),
        embedding_id=embedding_id(seg.segment_id, "e"),
        caption="a cat",
        caption_model="m",
        model="e",
        dim=2,
        vector=[0.6, 0.8],
    )


def _letter(stage: str, object_id: str, reason: str, segment: str | None = None) -> DeadLetter:
    return DeadLetter(
        stage=stage,
        reason=reason,
        kind="permanent",
        error_class="MediaError",
        message=f"{reason} happened",
        attempts=1,
        source_topic="t",
        partition=0,
        offset=0,
        payload=b"{}",
        object_id=object_id,
        segment_id=segment,
    )


def _reconcile(env: dict[str, str]) -> dict[str, int]:
    run = subprocess.run(
        [sys.executable, "-m", "workers.cli.main", "reconcile", "--json"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    counts: dict[str, int] = json.loads(run.stdout)
    return counts


def _own_topics(unique: str) -> dict[str, str]:
    """Every pipeline topic under this test's own name: reconcile reads them all (speech and
    transcripts too), and the shared names hold what other tests on this broker wrote."""
    fields = [f for f, info in DecodeSettings.model_fields.items() if f.startswith("topic_") and info.annotation is str]
    return {f"CAPSTREAM_{f.upper()}": f"{f.removeprefix('topic_')}-{unique}" for f in fields}


async def test_reconcile_rebuilds_redis_from_the_topics(
    stack_env: StackEndpoints, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    topics = _own_topics(unique)
    for key, value in topics.items():  # monkeypatch: later tests must not see these topics
        monkeypatch.setenv(key, value)
    settings = DecodeSettings()
    await ensure_topics(settings, REGISTRY.topics(settings))
    done, in_flight, dead, partial = (str(uuid.uuid4()) for _ in range(4))
    done_segs = [_segment(done, 0, "cut", "done.mp4"), _segment(done, 1, "end", "done.mp4")]
    flight_segs = [_segment(in_flight, 0, "cut", "flight.mp4"), _segment(in_flight, 1, "end", "flight.mp4")]
    partial_seg = _segment(partial, 0, "cut", "partial.mp4")
    records: list[tuple[str, Message]] = [
        *((settings.topic_segments, s) for s in [*done_segs, *flight_segs, partial_seg]),
        *((settings.topic_captions, _caption(s)) for s in [*done_segs, flight_segs[0]]),
        *((settings.topic_embeddings, _embedding(s)) for s in done_segs),
        (dlq_topic(settings.topic_objects), _letter("decode", dead, "corrupt_media")),
        # A caption dead letter for a segment another copy finished does not fail the object.
        (dlq_topic(settings.topic_segments), _letter("caption", in_flight, "timeout", flight_segs[0].segment_id)),
    ]
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for topic, message in records:
            object_id = getattr(message, "object_id", None) or "x"
            await producer.send_and_wait(topic, message.to_bytes(), key=object_id.encode())
    finally:
        await producer.stop()

    env = {**os.environ, **topics}
    counts = await asyncio.to_thread(_reconcile, env)
    assert counts["segments"] == 5 and counts["captions"] == 3 and counts["embeddings"] == 2
    assert counts["totals"] == 2 and counts["failed"] == 1 and counts["claims"] == 3

    redis = Redis.from_url(settings.redis_url)
    keys = RedisKeys(settings.key_prefix)
    progress = ProgressStore(redis, keys)
    try:
        p_done = await progress.get(done)
        assert p_done is not None and p_done.state is ObjectState.DONE
        assert (p_done.segments_total, p_done.decoded, p_done.captioned, p_done.embedded) == (2, 2, 2, 2)
        assert [e.segment_index for e in await ResultStore(redis, keys).get(done)] == [0, 1]
        # The result view holds captions and ids, no vector, and expires.
        for stored in (await redis.hgetall(keys.results(done))).values():
            assert b"vector" not in stored and b"a cat" in stored
        assert 0 < await redis.ttl(keys.results(done)) <= settings.result_ttl_s

        p_flight = await progress.get(in_flight)
        assert p_flight is not None and p_flight.state is ObjectState.DECODED
        assert (p_flight.segments_total, p_flight.captioned, p_flight.embedded) == (2, 1, 0)
        # A redelivered segment that was captioned is skipped; the other one is not.
        assert await progress.is_marked("captioned", flight_segs[0].segment_id)
        assert not await progress.is_marked("captioned", flight_segs[1].segment_id)

        p_dead = await progress.get(dead)
        assert p_dead is not None and p_dead.state is ObjectState.FAILED
        assert p_dead.error is not None and "corrupt_media" in p_dead.error

        p_partial = await progress.get(partial)
        assert p_partial is not None and p_partial.state is ObjectState.DECODING

        claims = ClaimStore(redis, keys, ttl_s=60)
        for object_id in (done, in_flight, dead):  # finished runs: a duplicate event is skipped
            assert await claims.claim(object_id, "objects/0/99") is ClaimOutcome.DUPLICATE
        # The half-decoded object's event, redelivered, decodes it again.
        assert await claims.claim(partial, "objects/0/7") is ClaimOutcome.ACQUIRED
        # An older event for a key whose newer version was decoded is stale.
        sequencers = SequencerStore(redis, keys, ttl_s=60)
        assert await sequencers.advance("media", "done.mp4", "00AA") is SequencerOutcome.STALE

        assert (await asyncio.to_thread(_reconcile, env))["newly_marked"] == 0
        p_flight_again = await progress.get(in_flight)
        assert p_flight_again is not None and (p_flight_again.captioned, p_flight_again.decoded) == (1, 2)

        # The in-flight object still finishes: its embed worker marks the two segments.
        for seg in flight_segs:
            assert await progress.mark("embedded", in_flight, seg.segment_id)
        p_finished = await progress.get(in_flight)
        assert p_finished is not None and p_finished.state is ObjectState.DONE
    finally:
        await redis.aclose()


async def test_reconcile_before_any_topic_exists(stack_env: StackEndpoints, unique: str) -> None:
    """A fresh deployment (or one whose topics were never created) reconciles to nothing."""
    env = {**os.environ, **_own_topics(f"absent-{unique}")}
    counts = await asyncio.to_thread(_reconcile, env)
    assert counts["objects"] == 0 and counts["segments"] == 0 and counts["malformed"] == 0


# Fields the two ways of writing differ in by design: times of the writes.
_TIMES = {"created_at", "updated_at", "finished_at"}


async def _dump(redis: Redis, prefix: str) -> dict[str, tuple[str, bool, object]]:
    """Every key under ``prefix``: (type, has a TTL, value), values normalised where the two
    writers legitimately differ (claim owners, sequencer zero padding, write times). The
    webhooks' outbox is left out: it holds notifications of transitions as they happened,
    which reconcile deliberately does not announce again (``notify=False``)."""
    out: dict[str, tuple[str, bool, object]] = {}
    async for raw in redis.scan_iter(match=f"{prefix}:*"):
        key = raw.decode()
        name = key[len(prefix) + 1 :]
        if key == RedisKeys(prefix).outcomes():
            continue
        kind = (await redis.type(key)).decode()
        value: object
        if kind == "string":
            text = (await redis.get(key)).decode()
            value = "claimed" if name.startswith("claim:") else text.lstrip("0") if name.startswith("seq:") else text
        elif kind == "hash":
            fields = {k.decode(): v.decode() for k, v in (await redis.hgetall(key)).items()}
            value = {
                k: json.loads(v) if name.startswith("results:") else v for k, v in fields.items() if k not in _TIMES
            }
        else:
            value = sorted(m.decode() for m in await redis.zrange(key, 0, -1))
        out[name] = (kind, await redis.ttl(key) > 0, value)
    return out


async def test_a_reconciled_redis_equals_the_one_the_workers_built(
    stack_env: StackEndpoints, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stages' own writes, in their order, under one prefix; the same history on the
    topics, reconciled under another: the two Redis states must be the same."""
    topics = _own_topics(unique)
    for key, value in topics.items():
        monkeypatch.setenv(key, value)
    settings = DecodeSettings()
    await ensure_topics(settings, REGISTRY.topics(settings))
    done, in_flight = str(uuid.uuid4()), str(uuid.uuid4())
    done_segs = [_segment(done, i, "end" if i == 2 else "cut", "done.mp4") for i in range(3)]
    flight_segs = [_segment(in_flight, i, "end" if i == 1 else "cut", "flight.mp4") for i in range(2)]
    late = _letter("caption", in_flight, "timeout", flight_segs[0].segment_id)  # another copy finished it
    failing = _letter("embed", in_flight, "bad_vector", flight_segs[1].segment_id)

    redis = Redis.from_url(settings.redis_url)
    wkeys = RedisKeys(f"{settings.key_prefix}w")
    progress = ProgressStore(redis, wkeys, failed_ttl_s=settings.failed_progress_ttl_s)
    results = ResultStore(redis, wkeys, settings.result_ttl_s)
    records: list[tuple[str, Message]] = []
    try:
        for oid, segs in ((done, done_segs), (in_flight, flight_segs)):  # the decode stage
            await SequencerStore(redis, wkeys, settings.claim_ttl_s).advance("media", segs[0].key or "", "00AB")
            await ClaimStore(redis, wkeys, settings.claim_ttl_s).claim(oid, "objects/0/1")
            await progress.start(oid, segs[0].source_uri)
            for seg in segs:
                await progress.mark("decoded", oid, seg.segment_id)
            await progress.set_total(oid, len(segs))
            records += [(settings.topic_segments, s) for s in segs]
        for seg in [*done_segs, flight_segs[0]]:  # the caption stage
            await progress.mark("captioned", seg.object_id, seg.segment_id)
            records.append((settings.topic_captions, _caption(seg)))
        for seg in done_segs:  # the embed stage: the row, then the marker
            await results.put(ResultRow.of(_embedding(seg)))
            await progress.mark("embedded", seg.object_id, seg.segment_id)
            records.append((settings.topic_embeddings, _embedding(seg)))
        assert await progress.is_marked("captioned", flight_segs[0].segment_id)  # the caption hook skips `late`
        await progress.fail(in_flight, f"embed {failing.reason}: {failing.message}")
        records += [(dlq_topic(settings.topic_segments), late), (dlq_topic(settings.topic_captions), failing)]
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
        await producer.start()
        try:
            for topic, message in records:
                await producer.send_and_wait(
                    topic, message.to_bytes(), key=str(getattr(message, "object_id", "x")).encode()
                )
        finally:
            await producer.stop()

        counts = await asyncio.to_thread(_reconcile, {**os.environ, **topics})
        assert counts["failed"] == 1 and counts["newly_marked"] == 12  # 5 decoded, 4 captioned, 3 embedded

        built, reconciled = await _dump(redis, wkeys.prefix), await _dump(redis, settings.key_prefix)
        assert set(built) == set(reconciled)
        for name, state in built.items():
            assert reconciled[name] == state, name
    finally:
        await redis.aclose()
