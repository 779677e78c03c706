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
