"""The local result view: embeddings per object, keyed by segment so replays overwrite.

It is a sink for the demo and ``capstream results``; the durable record is the embeddings
topic, from which this view can be rebuilt.
"""

from __future__ import annotations

from redis.asyncio import Redis

from schemas.embeddings import Embedding
from workers.state.keys import RedisKeys


class ResultStore:
    def __init__(self, redis: Redis, keys: RedisKeys) -> None:
        self._redis = redis
        self._keys = keys

    async def put(self, embedding: Embedding) -> None:
        # The thumbnail stays in the search index: Redis holds only the small, rebuildable view.
        await self._redis.hset(
            self._keys.results(embedding.object_id),
            embedding.segment_id,
            embedding.model_dump_json(exclude={"thumbnail"}),
        )

    async def get(self, object_id: str) -> list[Embedding]:
        raw = await self._redis.hgetall(self._keys.results(object_id))
        rows = [Embedding.model_validate_json(v) for v in raw.values()]
        return sorted(rows, key=lambda e: e.segment_index)
