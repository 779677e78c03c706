"""A redelivered segment that a model stage already finished costs no model call and makes no
second output (``ModelStage.process`` checks the stage's done marker in Redis first).

Real broker and redis-server; the caption and embed stages as the workers build them, run by
the real consumer loop. Only the model is a counting stand-in: these tests are about the skip,
not the engine (the engines have their own tests against vLLM). A redelivery is the same
Kafka record read again, as after a crash between the done marker and the offset commit: a
second consumer group stands for the worker that never saw the commit.
"""

from __future__ import annotations

import asyncio
import io
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from PIL import Image
from redis.asyncio import Redis

from schemas.base import Message
from schemas.captions import Caption
from schemas.embeddings import Embedding
from schemas.ids import object_version_id, segment_id
from schemas.segments import Frame, SegmentBatch
from workers.caption.backend import CaptionResult
from workers.caption.prompt import ChatMessages
from workers.caption.stage import CaptionStage
from workers.embed.stage import EmbedStage
from workers.localstack import StackEndpoints
from workers.runtime.kafka import ensure_topics, read_topics
from workers.runtime.loop import StageLoop
from workers.runtime.stage import ModelStage
from workers.settings import CaptionSettings, CommonSettings, EmbedSettings
from workers.state import RedisKeys, ResultStore
from workers.state.results import ResultRow

pytestmark = pytest.mark.integration

OBJECT_ID = object_version_id("s3://media/clip.mp4", "e:redelivered")


class _CountingModel:
    """The part of a model backend the stage's lifecycle uses, and a count of model calls."""

    name = "vllm"

    def __init__(self) -> None:
        self.calls = 0

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class CountingCaptioner(_CountingModel):
    """A ``CaptionBackend`` that counts its calls."""

    model = "counting-captioner"

    async def caption(self, messages: ChatMessages) -> CaptionResult:
        self.calls += 1
        return CaptionResult(text="a cat on a sofa", prompt_tokens=10, completion_tokens=5, latency_s=0.01)


class CountingEmbedder(_CountingModel):
    """An ``EmbedBackend`` that counts its calls."""

    model = "counting-embedder"

    async def embed(self, text: str) -> list[float]:
        self.calls += 1
        return [0.6, 0.8, 0.0]


def _jpeg(width: int = 64, height: int = 64) -> bytes:
    out = io.BytesIO()
    Image.frombytes("RGB", (width, height), random.Random(0).randbytes(width * height * 3)).save(out, format="JPEG")
    return out.getvalue()


_REF: dict[str, Any] = {
    "object_id": OBJECT_ID,
    "segment_id": segment_id(OBJECT_ID, 0),
    "segment_index": 0,
    "source_uri": "s3://media/clip.mp4",
    "start_s": 0.0,
    "end_s": 2.0,
}


@dataclass
class Case:
    """One model stage: its settings, input record, and what it leaves in Redis when done."""

    settings: CommonSettings
    input_topic: str
    output_topic: str
    group: str
    record: Message
    backend: CountingCaptioner | CountingEmbedder
    make_stage: Callable[[Redis], ModelStage[Any, Any]]
    counter: str  # the progress field the done marker moves


def _caption_case(unique: str) -> Case:
    settings = CaptionSettings(
        topic_segments=f"segments-{unique}", topic_captions=f"captions-{unique}", retry_backoff_s=0.05
    )
    backend = CountingCaptioner()
    segment = SegmentBatch(
        **_REF, media_kind="video", reason="end", frames=[Frame(index=0, pts_s=0.0, width=64, height=64, jpeg=_jpeg())]
    )
    return Case(
        settings,
        settings.topic_segments,
        settings.topic_captions,
        f"caption-{unique}",
        segment,
        backend,
        lambda redis: CaptionStage(settings, redis, backend),
        "captioned",
    )


def _embed_case(unique: str) -> Case:
    settings = EmbedSettings(
        topic_captions=f"captions-{unique}", topic_embeddings=f"embeddings-{unique}", retry_backoff_s=0.05
    )
    backend = CountingEmbedder()
    caption = Caption(**_REF, frame_pts=[0.0], text="a cat on a sofa", model="tiny-vl", backend="vllm", latency_s=0.1)
    return Case(
        settings,
        settings.topic_captions,
        settings.topic_embeddings,
        f"embed-{unique}",
        caption,
        backend,
        lambda redis: EmbedStage(settings, redis, backend),
        "embedded",
    )


async def _consume_once(case: Case, redis: Redis, group: str) -> StageLoop[Any]:
    """Run a fresh worker of the stage in ``group`` until it has finished and committed the record."""
    loop = StageLoop(case.make_stage(redis), case.settings, group, max_in_flight=2)
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    deadline = asyncio.get_running_loop().time() + 30
    try:
        while loop.metrics.records < 1 or loop.metrics.commits < 1:
            assert not task.done(), f"the stage stopped: {task.exception() if task.done() else ''}"
            assert asyncio.get_running_loop().time() < deadline, "the record was not consumed and committed"
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    return loop


@pytest.mark.parametrize("make_case", [_caption_case, _embed_case], ids=["caption", "embed"])
async def test_a_redelivered_finished_segment_is_skipped(
    stack_env: StackEndpoints, unique: str, make_case: Callable[[str], Case]
) -> None:
    case = make_case(unique)
    await ensure_topics(case.settings, [case.input_topic, case.output_topic])
    producer = AIOKafkaProducer(bootstrap_servers=case.settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(case.input_topic, case.record.to_bytes(), key=OBJECT_ID.encode())
    finally:
        await producer.stop()
    keys = RedisKeys(case.settings.key_prefix)
    redis = Redis.from_url(case.settings.redis_url)
    try:
        first = await _consume_once(case, redis, case.group)
        assert case.backend.calls == 1 and first.metrics.outputs == 1
        assert await redis.exists(keys.done(case.counter, _REF["segment_id"]))

        redelivery = await _consume_once(case, redis, f"{case.group}-redelivered")
        assert redelivery.metrics.records == 1, "the record was not redelivered"
        assert case.backend.calls == 1, "the finished segment went to the model again"
        assert redelivery.metrics.outputs == 0, "the finished segment was published again"
        outputs = await read_topics(case.settings.kafka_bootstrap, [case.output_topic])
        assert len(outputs) == 1
        assert await redis.hget(keys.progress(OBJECT_ID), case.counter) == b"1"
        if case.counter == "embedded":  # the result view holds the one embedding
            [row] = await ResultStore(redis, keys).get(OBJECT_ID)
            assert row == ResultRow.of(Embedding.model_validate_json(outputs[0].value or b""))
            assert b"vector" not in (await redis.hget(keys.results(OBJECT_ID), row.segment_id) or b"")
    finally:
        await redis.aclose()
