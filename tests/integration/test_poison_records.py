"""One bad record never stops a stage, and no error text leaks a presigned URL (issue 8).

Real Tansu broker, redis-server and SeaweedFS; the decode stage and the consumer loop as the
workers run them.
"""

from __future__ import annotations

import io
import json
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import structlog
from redis.asyncio import Redis

from loadtest.media_factory import make_image
from schemas.base import Message
from schemas.dead_letter import DeadLetter
from schemas.events import ObjectCreated
from schemas.progress import ObjectState
from tests.poison_harness import eventually, produce, running
from tests.stack_s3 import stack_s3_client
from workers.decode.dispatch import decode_segments
from workers.decode.policy import SegmentPolicy
from workers.decode.source import ObjectSource
from workers.decode.stage import DecodeStage
from workers.localstack import StackEndpoints
from workers.runtime.errors import PermanentError
from workers.runtime.kafka import dlq_topic, ensure_topics, read_topics
from workers.runtime.logging import configure_logging
from workers.runtime.loop import StageLoop
from workers.runtime.stage import Output, RecordContext, Stage
from workers.settings import CommonSettings, DecodeSettings
from workers.stages import REGISTRY
from workers.state import ProgressStore, RedisKeys
from workers.state.dead_letter_log import read_letters

pytestmark = pytest.mark.integration


def _aws_event(key_json: str, size: int = 5, etag: str = "e1") -> bytes:
    """Raw JSON, so an escape like \\ud800 reaches the parser exactly as a producer sent it."""
    return (
        '{"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "media"}, '
        f'"object": {{"key": "{key_json}", "size": {size}, "eTag": "{etag}"}}}}}}]}}'
    ).encode()


async def test_poison_events_are_dead_lettered_and_the_decode_stage_keeps_going(
    stack_env: StackEndpoints, unique: str, tmp_path: Path
) -> None:
    settings = DecodeSettings(
        allowed_schemes="s3,file",
        topic_objects=f"objects-{unique}",
        topic_segments=f"segments-{unique}",
        decode_group=f"decode-{unique}",
        filter_key_suffixes=".png,.mp4",
        max_object_bytes=1_000_000,
        retry_backoff_s=0.05,
    )
    await ensure_topics(settings, REGISTRY.topics(settings))
    image = tmp_path / "good.png"
    make_image(image, "PNG")
    oversized = ObjectCreated(uri="s3://media/big.png", bucket="media", key="big.png", size=5_000_000, etag="e1")
    filtered = ObjectCreated(uri="s3://media/notes.txt", bucket="media", key="notes.txt", size=5, etag="e1")
    good = ObjectCreated(uri=f"file://{image}")
    events = [
        _aws_event("\\ud800.png"),  # lone surrogate: crash-looped the stage before the fix
        b"[" * 50_000 + b"]" * 50_000,  # deeper than json recurses
        b'{"uri": "s3://media/k.png", "size": 1' + b"0" * 5000 + b"}",  # over the int digit limit
        _aws_event("big.png", size=5_000_000),  # declared over CAPSTREAM_MAX_OBJECT_BYTES
        _aws_event("notes.txt"),  # declined by the suffix filter
        json.dumps({"uri": good.uri}).encode(),
    ]
    await produce(settings, settings.topic_objects, events)

    redis = Redis.from_url(settings.redis_url)
    store = ProgressStore(redis, RedisKeys(settings.key_prefix))
    loop = StageLoop(DecodeStage(settings, redis), settings, settings.decode_group, 2)
    try:
        async with running(loop) as task:

            async def good_decoded() -> bool:
                p = await store.get(good.object_id)
                return p is not None and p.state is ObjectState.DECODED

            await eventually(good_decoded, loop_task=task, timeout_s=40)

            async def four_letters() -> list[Any]:
                # This test's own letters (the shared stack's default DLQs hold other tests').
                ours = [s for s in await read_letters(settings) if s.letter.source_topic == settings.topic_objects]
                return ours if len(ours) >= 4 else []

            letters = await eventually(four_letters, loop_task=task, timeout_s=40)
            by_event = {events.index(stored.letter.payload): stored.letter for stored in letters}
            assert sorted(by_event) == [0, 1, 2, 3], [(s.letter.reason, s.letter.message) for s in letters]
            assert by_event[0].reason == "malformed_record", "the raw bytes are kept for replay"
            assert by_event[1].reason == "malformed_json" and by_event[2].reason == "malformed_json"
            assert by_event[3].reason == "object_too_large" and by_event[3].object_id == oversized.object_id
            assert all(letter.kind == "permanent" and letter.attempts == 1 for letter in by_event.values())

            too_large = await store.get(oversized.object_id)
            assert too_large is not None and too_large.state is ObjectState.FAILED
            assert too_large.error is not None and "object_too_large" in too_large.error
            skipped = await store.get(filtered.object_id)
            assert skipped is not None and skipped.state is ObjectState.SKIPPED and skipped.finished
            assert skipped.error is not None and "key_suffix" in skipped.error
            ttl = await redis.ttl(RedisKeys(settings.key_prefix).progress(oversized.object_id))
            assert 0 < ttl <= settings.failed_progress_ttl_s, "failed progress must expire"
            assert loop.metrics.retries == 0, "bad content is permanent: nothing was retried"
    finally:
        await redis.aclose()


class _Item(Message):
    n: int


class _HostileStage(Stage[_Item]):
    """Fails every record; for some, building or recording the dead letter fails as well."""

    name = "hostile"

    def __init__(self, in_topic: str, out_topic: str, error: Exception, progress: ProgressStore) -> None:
        self.input_topic = in_topic
        self.output_topics = (out_topic,)
        self.error = error
        self.progress = progress
        self.letters: list[int] = []

    def parse(self, value: bytes) -> _Item:
        return _Item.model_validate_json(value)

    async def process(self, item: _Item, ctx: RecordContext) -> AsyncGenerator[Output, None]:
        if item.n >= 10:
            yield Output(self.output_topics[0], str(item.n), item)
            return
        raise PermanentError("bad_item", f"item {item.n} failed: {self.error}", object_id=f"obj-{item.n}")

    def object_id_of(self, item: _Item | None, ctx: RecordContext) -> str | None:
        if item is not None and item.n == 1:
            "\ud800".encode()  # the content breaks the id, as the surrogate key did
        return f"obj-{item.n}" if item is not None else None

    async def dead_lettered(self, item: _Item | None, letter: DeadLetter, ctx: RecordContext) -> None:
        if item is not None and item.n == 2:
            raise ValueError("the hook trips over this record too")
        if letter.object_id:
            await self.progress.fail(letter.object_id, f"{letter.reason}: {letter.message}")


async def _presigned_read_error(stack: StackEndpoints, tmp_path: Path) -> Exception:
    """The real error FFmpeg raises when an object is deleted while it is being read."""
    video = tmp_path / "noise.mp4"
    rng = np.random.default_rng(7)
    with av.open(str(video), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
        stream.options = {"g": "10"}
        for _ in range(60):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (360, 640, 3), dtype=np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    settings = DecodeSettings(read_retries=0)
    source = ObjectSource(settings)
    await source.start()
    try:
        async with stack_s3_client(stack) as s3:
            await s3.put_object(Bucket="media", Key="noise.mp4", Body=video.read_bytes())
            url = await source.resolve(ObjectCreated(uri="s3://media/noise.mp4", bucket="media", key="noise.mp4"))
            assert "X-Amz-Signature=" in url
            segments = decode_segments(
                url, SegmentPolicy(max_segment_s=1.0, scene_threshold=0.0), options=source.ffmpeg_options(url)
            )
            next(segments)
            await s3.delete_object(Bucket="media", Key="noise.mp4")
            try:
                for _ in segments:
                    pass
            except Exception as exc:
                return exc
    finally:
        await source.close()
    raise AssertionError("reading a deleted object did not fail")


async def test_dead_lettering_never_stops_the_loop_and_no_error_text_leaks_a_presigned_url(
    stack_env: StackEndpoints, unique: str, tmp_path: Path
) -> None:
    read_error = await _presigned_read_error(stack_env, tmp_path)
    signature = str(read_error).split("X-Amz-Signature=")[1][:16]
    assert signature, "FFmpeg's error quotes the presigned URL: this is what must not leak"

    settings = CommonSettings(retry_backoff_s=0.05)
    in_topic, out_topic = f"hostile-{unique}", f"hostile-out-{unique}"
    await ensure_topics(settings, [in_topic, out_topic, dlq_topic(in_topic)])
    redis = Redis.from_url(settings.redis_url)
    store = ProgressStore(redis, RedisKeys(settings.key_prefix))
    logs = io.StringIO()
    configure_logging("INFO", "json", stream=logs)
    stage = _HostileStage(in_topic, out_topic, read_error, store)
    loop = StageLoop(stage, settings, f"hostile-{unique}", 2)
    try:
        async with running(loop) as task:
            # One key, one partition: the records' offsets, which the letters carry, are 0, 1, 2, 3.
            await produce(settings, in_topic, [_Item(n=n).to_bytes() for n in (0, 1, 2, 10)], key=b"hostile")

            async def done() -> list[Any]:
                records = await read_topics(settings.kafka_bootstrap, [dlq_topic(in_topic), out_topic])
                return records if len(records) >= 4 else []

            records = await eventually(done, loop_task=task, timeout_s=40)
            letters = {
                (letter := DeadLetter.model_validate_json(r.value)).offset: letter
                for r in records
                if r.topic == dlq_topic(in_topic)
            }
            assert sorted(letters) == [0, 1, 2] and len(records) == 4
            assert letters[0].reason == "bad_item"
            assert letters[1].reason == "dead_letter_failed" and letters[1].payload == _Item(n=1).to_bytes()
            assert "UnicodeEncodeError" in letters[1].message
            assert letters[2].reason == "bad_item", "a failing hook does not lose the letter"
            failed = await store.get("obj-0")
            assert failed is not None and failed.state is ObjectState.FAILED and failed.error
            texts = [letter.to_bytes().decode() for letter in letters.values()] + [failed.error, logs.getvalue()]
            assert "dead_letter_build_failed" in logs.getvalue() and "dead_lettered_hook_failed" in logs.getvalue()
            for text in texts:
                assert signature not in text and "X-Amz-Credential=CAPSTREAM" not in text, text[:500]
            assert "noise.mp4?REDACTED" in letters[0].message
    finally:
        structlog.reset_defaults()
        await redis.aclose()
