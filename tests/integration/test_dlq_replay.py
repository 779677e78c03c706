"""Dead letters can be listed and replayed after the cause is fixed (`capstream dlq`)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from loadtest.media_factory import make_image
from schemas.progress import ObjectState
from workers.decode.stage import DecodeStage
from workers.localstack import StackEndpoints
from workers.runtime.kafka import ensure_topics
from workers.runtime.loop import StageLoop
from workers.settings import DecodeSettings
from workers.stages import REGISTRY
from workers.state import ProgressStore, RedisKeys
from workers.state.dead_letter_log import read_letters, replay_letters, select_letters

pytestmark = pytest.mark.integration


async def _wait_state(store: ProgressStore, object_id: str, state: ObjectState, timeout_s: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while (p := await store.get(object_id)) is None or p.state is not state:
        assert asyncio.get_running_loop().time() < deadline, f"{object_id} stuck at {p}"
        await asyncio.sleep(0.1)


def _no_skips(stored: object, why: str) -> None:
    raise AssertionError(f"{stored} skipped: {why}")


async def test_missing_file_dead_letters_then_replays_after_fix(
    stack_env: StackEndpoints, unique: str, tmp_path: Path
) -> None:
    settings = DecodeSettings(
        allowed_schemes="file",
        topic_objects=f"objects-{unique}",
        topic_segments=f"segments-{unique}",
        topic_captions=f"captions-{unique}",
        decode_group=f"decode-{unique}",
    )
    await ensure_topics(settings, REGISTRY.topics(settings))
    image = tmp_path / "late.png"
    event = {"uri": f"file://{image}"}
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    await producer.send_and_wait(settings.topic_objects, json.dumps(event).encode(), key=b"late")
    await producer.stop()

    redis = Redis.from_url(settings.redis_url)
    store = ProgressStore(redis, RedisKeys(settings.key_prefix))
    stop = asyncio.Event()
    task = asyncio.create_task(StageLoop(DecodeStage(settings, redis), settings, settings.decode_group, 2).run(stop))
    try:
        letters: list = []
        for _ in range(100):
            letters = select_letters(await read_letters(settings), [], "decode", "object_not_found")
            if letters:
                break
            await asyncio.sleep(0.2)
        [stored] = letters
        object_id = stored.letter.object_id
        assert object_id and stored.ref.startswith(f"objects-{unique}.dlq/")
        assert json.loads(stored.letter.payload) == event
        await _wait_state(store, object_id, ObjectState.FAILED)

        make_image(image, "PNG")  # the operator fixes the cause...
        assert await replay_letters(settings, [stored], _no_skips) == 1  # ...and replays the dead letter
        await _wait_state(store, object_id, ObjectState.DECODED)
        progress = await store.get(object_id)
        assert progress is not None and progress.segments_total == 1 and progress.error is None
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await redis.aclose()
