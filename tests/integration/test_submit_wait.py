"""``wait_for`` follows the progress channel of a real redis-server.

Each test makes the slow re-read far longer than its own deadline, so only the channel (or the
reconnect path) can end the wait in time.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from redis.asyncio import Redis

from loadtest.media_factory import make_image
from schemas.progress import ObjectProgress, ObjectState
from workers.cli.submit import wait_for
from workers.localstack import StackEndpoints
from workers.settings import S3Settings
from workers.state import ProgressStore, RedisKeys
from workers.state.progress_feed import ProgressFeed

pytestmark = pytest.mark.integration

NEVER_S = 120.0  # the fallback re-read: far beyond every deadline below
PROMPT_S = 3.0


@dataclass(frozen=True)
class StackRedis:
    settings: S3Settings
    keys: RedisKeys
    redis: Redis


@pytest.fixture
async def at_stack(stack_env: StackEndpoints) -> AsyncIterator[StackRedis]:
    settings = S3Settings()
    redis = Redis.from_url(settings.redis_url)
    try:
        yield StackRedis(settings, RedisKeys(settings.key_prefix), redis)
    finally:
        await redis.aclose()


async def _started(redis: Redis, keys: RedisKeys, object_id: str) -> ProgressStore:
    store = ProgressStore(redis, keys)
    await store.start(object_id, f"s3://media/{object_id}.mp4")
    await store.set_total(object_id, 1)
    return store


@asynccontextmanager
async def _waiting(
    settings: S3Settings, reread_s: float = NEVER_S
) -> AsyncIterator[asyncio.Task[dict[str, ObjectProgress | None]]]:
    """``wait_for(["obj"])`` in the background, cancelled if a test leaves it running."""
    waiter = asyncio.create_task(wait_for(["obj"], {}, settings, timeout_s=NEVER_S, show=False, reread_s=reread_s))
    try:
        yield waiter
    finally:
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)


async def _subscribed(redis: Redis, keys: RedisKeys, timeout_s: float = 5.0) -> None:
    """Until the waiter is subscribed (if it never is, go on: the wait itself must then fail)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        [(_channel, count)] = await redis.pubsub_numsub(keys.progress_channel())
        if count:
            await asyncio.sleep(0.3)  # and has made its first read
            return
        await asyncio.sleep(0.05)


async def test_a_published_change_wakes_the_wait_at_once(at_stack: StackRedis) -> None:
    settings, keys, redis = at_stack.settings, at_stack.keys, at_stack.redis
    store = await _started(redis, keys, "obj")
    async with _waiting(settings) as waiter:
        await _subscribed(redis, keys)
        assert not waiter.done()
        await store.start("someone-else", "s3://media/other.mp4")  # not followed: no early return
        await asyncio.sleep(0.2)
        assert not waiter.done()
        began = time.monotonic()
        assert await store.mark("embedded", "obj", "obj-s0")
        states = await asyncio.wait_for(asyncio.shield(waiter), PROMPT_S)
        assert time.monotonic() - began < 1.0
    assert states["obj"] is not None and states["obj"].state is ObjectState.DONE


async def test_a_change_whose_message_was_lost_is_read_after_the_reconnect(at_stack: StackRedis) -> None:
    keys, redis = at_stack.keys, at_stack.redis
    name = f"waiter-{uuid.uuid4().hex[:8]}"
    waiting = at_stack.settings.model_copy(update={"redis_url": f"{at_stack.settings.redis_url}?client_name={name}"})
    await _started(redis, keys, "obj")
    async with _waiting(waiting) as waiter:
        await _subscribed(redis, keys)
        # The change lands while the waiter's subscription is down: its message never arrives.
        await redis.hset(keys.progress("obj"), mapping={"state": "done", "embedded": 1})
        killed = [
            await redis.client_kill_filter(_id=client["id"])
            for client in await redis.client_list()
            if client.get("name") == name and client.get("sub") != "0"
        ]
        assert killed, "the waiter's subscriber connection was not found"
        states = await asyncio.wait_for(asyncio.shield(waiter), PROMPT_S)
    assert states["obj"] is not None and states["obj"].state is ObjectState.DONE


async def test_the_slow_reread_catches_a_change_that_was_never_announced(at_stack: StackRedis) -> None:
    settings, keys, redis = at_stack.settings, at_stack.keys, at_stack.redis
    await _started(redis, keys, "obj")
    async with _waiting(settings, reread_s=1.0) as waiter:
        await _subscribed(redis, keys)
        await redis.hset(keys.progress("obj"), mapping={"state": "done", "embedded": 1})  # no PUBLISH
        states = await asyncio.wait_for(asyncio.shield(waiter), PROMPT_S)
    assert states["obj"] is not None and states["obj"].state is ObjectState.DONE


async def test_the_feed_is_subscribed_before_it_is_handed_out(at_stack: StackRedis) -> None:
    """The server's confirmation is consumed inside ``subscribe``: a read after it misses nothing."""
    keys, redis = at_stack.keys, at_stack.redis
    async with ProgressFeed.subscribe(redis, keys) as feed:
        assert (await redis.pubsub_numsub(keys.progress_channel()))[0][1] == 1
        await redis.publish(keys.progress_channel(), "a")
        await redis.publish(keys.progress_channel(), "b")
        assert await feed.changes(PROMPT_S) == {"a", "b"}
        assert await feed.changes(0.1) is None  # nothing more: the caller re-reads


def test_submit_wait_in_a_pipe_writes_plain_lines_and_keeps_its_exit_code(
    stack_env: StackEndpoints, tmp_path: Path
) -> None:
    """No workers run: the object stays queued, the wait times out, submit exits 1."""
    image = tmp_path / ("a-long-name-" * 12 + "still.png")
    make_image(image, "PNG")
    result = subprocess.run(
        [sys.executable, "-m", "workers.cli.main", "submit", str(image), "--wait", "--timeout", "2"],
        env={**os.environ, "CAPSTREAM_HOME": str(tmp_path / "home"), "COLUMNS": "40", "FORCE_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    object_id, uri = result.stdout.split()
    assert uri == f"s3://media/{image.name}"
    progress = [line for line in result.stderr.splitlines() if "queued" in line]
    assert len(progress) == 1 and "\x1b" not in result.stderr, result.stderr
    assert progress[0].startswith("a-long-name-") and progress[0].endswith("] queued")
