"""The result view: per object, each segment's times, caption and ids, keyed by segment so
replays overwrite. ``capstream results``, the demo, the API's ``/objects/{id}`` and the chaos
collector read it; the durable record is the embeddings topic (and the search index), from
which ``capstream reconcile`` rebuilds it.

A row holds no vector. It used to be the whole embedding: ~80 KB of JSON per segment at 4096
dimensions (a 1,000-segment object was ~80 MB of Redis, all parsed into Python floats to list
captions), against ~250 bytes now (``ResultRow``; tests/unit/test_result_row.py measures both).
The view is a sink, not a record, so it expires: each write sets the object's hash to expire
``CAPSTREAM_RESULT_TTL_S`` later (7 days; 0 = never), in the same Lua script as the write.
After that the object's segments are still in the search index (``/objects/{id}`` lists them).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from schemas.embeddings import Embedding, Modality
from workers.state.keys import RedisKeys

_WEEK_S = 7 * 24 * 3600

_PUT = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if tonumber(ARGV[3]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[3]) else redis.call('PERSIST', KEYS[1]) end
return 1
"""


class ResultRow(BaseModel):
    """One segment of the view: an embedding without its vector (and thumbnail). Unknown
    fields are ignored, so it parses an embedding record, or a row an older version wrote
    (which held the vector), without keeping the vector."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    object_id: str
    segment_id: str
    segment_index: int
    source_uri: str
    start_s: float
    end_s: float
    page_number: int | None = None
    embedding_id: str
    caption: str  # the caption, or what was said (modality speech)
    caption_model: str
    modality: Modality = "visual"  # rows written before speech existed are captions
    language: str | None = None
    model: str  # the embedding model
    dim: int

    @classmethod
    def of(cls, embedding: Embedding) -> ResultRow:
        return cls(**{name: getattr(embedding, name) for name in cls.model_fields})


class ResultStore:
    def __init__(self, redis: Redis, keys: RedisKeys, ttl_s: int = _WEEK_S) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl_s = ttl_s
        self._put = redis.register_script(_PUT)

    async def put(self, row: ResultRow, pipe: Pipeline | None = None) -> None:
        """Write the row and push the view's expiry out; ``pipe``: queue it there (one command)."""
        await self._put(
            keys=[self._keys.results(row.object_id)],
            args=[row.segment_id, row.model_dump_json(), self._ttl_s],
            client=pipe,
        )

    async def get(self, object_id: str) -> list[ResultRow]:
        raw = await self._redis.hgetall(self._keys.results(object_id))
        rows = [ResultRow.model_validate_json(v) for v in raw.values()]
        # In media order; speech chunks are numbered apart from segments, so index alone interleaves wrongly.
        return sorted(rows, key=lambda r: (r.start_s, r.modality == "speech", r.segment_index))
