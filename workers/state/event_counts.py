"""Counters of what a stage did with each event (accepted, ignored, filtered, stale, duplicate).

They live in Redis so every worker of a group adds to one picture (``capstream status`` and
tests read them); like all Redis state they can be lost without losing data.
"""

from __future__ import annotations

from redis.asyncio import Redis

from workers.state.keys import RedisKeys
from workers.state.replies import reply_text


class EventCounts:
    def __init__(self, redis: Redis, keys: RedisKeys, stage: str) -> None:
        self._redis = redis
        self._key = keys.event_counts(stage)

    async def add(self, outcome: str, n: int = 1) -> None:
        await self._redis.hincrby(self._key, outcome, n)

    async def get(self) -> dict[str, int]:
        raw = await self._redis.hgetall(self._key)
        return {reply_text(k): int(v) for k, v in raw.items()}
