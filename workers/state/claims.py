"""Event dedup: one run per object version, safe across crashes.

The claim's value is the Kafka record that owns the run. A duplicate event (another record)
is skipped; the owning record itself, redelivered after a crash, re-runs, so a claim never
strands work that was accepted but not finished.
"""

from __future__ import annotations

from enum import StrEnum

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from workers.state.keys import RedisKeys

_CLAIM = """
local cur = redis.call('GET', KEYS[1])
if not cur then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
  return 'acquired'
end
if cur == ARGV[1] then return 'reclaimed' end
return 'duplicate'
"""


# The owner of a claim rebuilt from the topics: never a Kafka record's topic/partition/offset.
_RESTORED = "reconciled"


class ClaimOutcome(StrEnum):
    ACQUIRED = "acquired"
    RECLAIMED = "reclaimed"  # same record redelivered: finish what a crash interrupted
    DUPLICATE = "duplicate"


class ClaimStore:
    def __init__(self, redis: Redis, keys: RedisKeys, ttl_s: int) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl_s = ttl_s
        self._script = redis.register_script(_CLAIM)

    async def claim(self, object_id: str, owner: str) -> ClaimOutcome:
        result = await self._script(keys=[self._keys.claim(object_id)], args=[owner, self._ttl_s])
        return ClaimOutcome(result.decode() if isinstance(result, bytes) else result)

    async def restore(self, object_id: str) -> bool:
        """After Redis lost its data: claim an object whose run finished (``capstream
        reconcile``), so a duplicate event is skipped; False if a claim exists. No record owns
        it, so even the original record, redelivered, is skipped: its work is on the topics."""
        return bool(await self._redis.set(self._keys.claim(object_id), _RESTORED, nx=True, ex=self._ttl_s))

    def queue_restore(self, pipe: Pipeline, object_id: str) -> None:
        """``restore`` queued on ``pipe`` (one command; its reply is true if it claimed)."""
        pipe.set(self._keys.claim(object_id), _RESTORED, nx=True, ex=self._ttl_s)

    async def release(self, object_id: str) -> bool:
        """Forget the claim so the object version can run again (dead-letter replay)."""
        return bool(await self._redis.delete(self._keys.claim(object_id)))
