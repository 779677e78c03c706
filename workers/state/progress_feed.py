"""Wake-ups from the progress channel, so a waiter sees a change when it happens, not on a poll.

Every ``ProgressStore`` write PUBLISHes the object id on ``RedisKeys.progress_channel()`` from
the same Lua script that changes the hash, so by the time a message arrives the hash already
holds the change. ``capstream submit --wait`` used to re-read every object every 0.5 s instead
(n HGETALLs per tick however idle the pipeline), and a change showed up to 0.5 s late.

Pub/sub is fire-and-forget: a message published while the subscriber's connection is down is
lost. So ``changes`` answers ``None`` ("re-read everything") when it heard nothing within the
caller's fallback interval, when the connection broke, and when redis-py re-subscribed after a
reconnect (seen as a second ``subscribe`` confirmation). ``subscribe`` returns only once the
server has confirmed the subscription: a read made after that cannot miss a later change.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from workers.state.keys import RedisKeys
from workers.state.replies import reply_text

log = structlog.get_logger("capstream.progress_feed")

_CONFIRM_TIMEOUT_S = 10.0
# After a broken connection, wait this long before the caller re-reads (and the next
# ``changes`` reconnects), so a Redis that is down is not hammered in a tight loop.
_RECONNECT_PAUSE_S = 0.5


class ProgressFeed:
    """Object ids announced on the progress channel, batched per wake-up."""

    def __init__(self, pubsub: PubSub) -> None:
        self._pubsub = pubsub

    @classmethod
    @asynccontextmanager
    async def subscribe(cls, redis: Redis, keys: RedisKeys) -> AsyncIterator[ProgressFeed]:
        pubsub = redis.pubsub()
        try:
            await pubsub.subscribe(keys.progress_channel())
            await _confirmed(pubsub)
            yield cls(pubsub)
        finally:
            await pubsub.aclose()

    async def changes(self, timeout_s: float) -> set[str] | None:
        """Ids changed since the last call, waiting up to ``timeout_s`` for the first one.

        ``None`` means a change may have gone unheard (nothing arrived in time, or the connection
        was lost and re-made): the caller should re-read everything it follows.
        """
        try:
            first = await self._pubsub.get_message(timeout=max(timeout_s, 0.0))
            if first is None:
                return None
            changed: set[str] = set()
            message: dict[str, Any] | None = first
            while message is not None:  # drain what is already queued: one redraw per burst
                if message["type"] != "message":
                    return None  # a re-subscribe after reconnect: messages in between are lost
                changed.add(reply_text(message["data"]))
                message = await self._pubsub.get_message(timeout=0.0)
            return changed
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            log.warning("progress_feed_disconnected", error=str(exc))
            await asyncio.sleep(_RECONNECT_PAUSE_S)
            return None


async def _confirmed(pubsub: PubSub) -> None:
    """Wait for the server's ``subscribe`` reply: until then a publish could still be missed."""
    deadline = time.monotonic() + _CONFIRM_TIMEOUT_S
    while (left := deadline - time.monotonic()) > 0:
        message = await pubsub.get_message(timeout=left)
        if message is not None and message["type"] == "subscribe":
            return
    raise RedisTimeoutError(f"no subscribe confirmation within {_CONFIRM_TIMEOUT_S:.0f}s")
