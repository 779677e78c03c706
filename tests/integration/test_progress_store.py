"""Progress bookkeeping against a real Redis: counters, done detection, sticky done."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from schemas.progress import ObjectState
from workers.localstack import StackEndpoints
from workers.state import ProgressStore, RedisKeys

pytestmark = pytest.mark.integration


async def test_done_when_all_embedded_whatever_the_order_and_late_failures_do_not_undo_it(
    stack: StackEndpoints, unique: str
) -> None:
    redis = Redis.from_url(stack.redis_url)
    store = ProgressStore(redis, RedisKeys(f"t{unique}"))
    try:
        await store.start("obj", "s3://b/k")
        assert await store.mark("embedded", "obj", "s0")
        assert not await store.mark("embedded", "obj", "s0")  # a redelivery counts once
        assert (await store.get("obj")).state is ObjectState.DECODING  # type: ignore[union-attr]
        await store.set_total("obj", 2)  # the decoder finishes after the first embedding
        assert await store.mark("embedded", "obj", "s1")
        done = await store.get("obj")
        assert done is not None and done.state is ObjectState.DONE and done.embedded == 2
        assert not await store.fail("obj", "caption retries_exhausted: late duplicate")
        after = await store.get("obj")
        assert after is not None and after.state is ObjectState.DONE and after.error is None
    finally:
        await redis.aclose()


async def test_each_transition_is_announced_once_in_the_outbox(stack: StackEndpoints, unique: str) -> None:
    """The webhooks' outbox gets one entry per transition to done or failed, written by the
    script that makes it: a redelivered mark, a second failure, a late failure of a done
    object add none, and reconcile's writes (notify=False) none at all."""
    redis = Redis.from_url(stack.redis_url)
    keys = RedisKeys(f"t{unique}")
    store = ProgressStore(redis, keys)

    async def outbox() -> list[tuple[str, str]]:
        entries = await redis.xrange(keys.outcomes())
        return [(f[b"event"].decode(), f[b"object_id"].decode()) for _, f in entries]

    try:
        await store.start("a", "s3://media/clips/a.mp4")
        await store.set_total("a", 2)
        await store.mark("embedded", "a", "s0")
        assert await outbox() == []
        await store.mark("embedded", "a", "s1")
        await store.mark("embedded", "a", "s1")  # redelivered
        await store.fail("a", "caption retries_exhausted: late duplicate")
        await store.start("b", "s3://media/clips/b.mp4")
        await store.fail("b", "decode corrupt_media: no frames")
        await store.fail("b", "decode corrupt_media: again")
        await store.reset_failure("b")  # a replayed letter: it may end again
        await store.fail("b", "decode corrupt_media: after replay")
        await store.start("c", "s3://media/clips/c.mp4")
        await store.set_total("c", 1, notify=False)
        await store.queue_mark(redis, "embedded", "c", "c0", notify=False)
        await store.queue_fail(redis, "d", "decode x: y", notify=False)
        assert await outbox() == [("object.done", "a"), ("object.failed", "b"), ("object.failed", "b")]
        entry = (await redis.xrange(keys.outcomes()))[0][1]
        assert entry[b"source_uri"] == b"s3://media/clips/a.mp4" and entry[b"segments_total"] == b"2"
    finally:
        await redis.aclose()
