"""Per-key ordering of S3 events: a stale event (older ``sequencer`` than one already
accepted for the same key) must not start a run over newer content.

S3 documents sequencers as hex strings to be compared after left-padding the shorter with
zeros; they order events of one key only. The comparison and the update are one Lua script,
so two workers racing on one key cannot both win with different versions.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from workers.state.keys import RedisKeys

_ADVANCE = """
local new = string.upper(ARGV[1])
local cur = redis.call('GET', KEYS[1])
if cur then
  local width = math.max(#cur, #new)
  local a = string.rep('0', width - #new) .. new
  local b = string.rep('0', width - #cur) .. cur
  if a < b then return 'stale' end
  if a == b then
    redis.call('EXPIRE', KEYS[1], ARGV[2])
    return 'current'
  end
end
redis.call('SET', KEYS[1], new, 'EX', ARGV[2])
return 'newer'
"""


class SequencerOutcome(StrEnum):
    NEWER = "newer"  # first or newest event for the key: accepted and recorded
    CURRENT = "current"  # same sequencer as the newest: a redelivery, the claim decides
    STALE = "stale"  # older than an accepted event: skip


class SequencerStore:
    def __init__(self, redis: Redis, keys: RedisKeys, ttl_s: int) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl_s = ttl_s
        self._script = redis.register_script(_ADVANCE)

    async def advance(self, bucket: str, key: str, sequencer: str) -> SequencerOutcome:
        return outcome(await self.queue_advance(self._redis, bucket, key, sequencer))

    async def queue_advance(self, client: Redis | Pipeline, bucket: str, key: str, sequencer: str) -> Any:
        """``advance`` on ``client``: with a pipeline, one queued command (its reply: ``outcome``)."""
        return await self._script(
            keys=[self._keys.sequencer(bucket, key)], args=[sequencer, self._ttl_s], client=client
        )


def outcome(reply: bytes | str) -> SequencerOutcome:
    return SequencerOutcome(reply.decode() if isinstance(reply, bytes) else reply)
