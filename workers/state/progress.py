"""Per-object progress hashes and the live progress channel.

Counters move only when a per-stage done marker is newly set, in the same Lua script, so a
redelivered segment never counts twice. ``done`` is decided atomically by whichever write
completes the picture (the last embedding, or the decoder's final segment count).

Hashes of objects that end `failed` or `skipped` expire (``CAPSTREAM_FAILED_PROGRESS_TTL_S``):
one event can name thousands of bad objects, and nothing downstream needs them once an
operator has had time to look (the dead letters keep the detail). `done` hashes stay.

The scripts that move an object to ``done`` or ``failed`` also append the outcome to the outbox
stream (``RedisKeys.outcomes``) in the same atomic step, so no crash can separate a transition
from its webhook; the webhooks stage moves the stream onto ``media.outcomes``. Reconcile
rebuilds progress with ``notify=False``: replaying the log must not announce every object again.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from schemas.progress import ObjectProgress, ObjectState
from workers.runtime.redaction import safe_text
from workers.state.keys import RedisKeys
from workers.state.replies import reply_text

StageCounter = Literal["decoded", "captioned", "transcribed", "embedded"]

# The outbox stream keeps at most about this many outcomes not yet moved to the topic (a
# webhooks stage down for that long loses the oldest; ~250 B each).
OUTBOX_MAX_LEN = 100_000

_OUTBOX = f"""
local function announce(outbox, notify, event, object_id, key, now, error)
  if notify ~= '1' then return end
  redis.call('XADD', outbox, 'MAXLEN', '~', {OUTBOX_MAX_LEN}, '*', 'event', event, 'object_id', object_id,
             'source_uri', redis.call('HGET', key, 'source_uri') or '',
             'segments_total', redis.call('HGET', key, 'segments_total') or '', 'error', error, 'at', now)
end
"""

# Shared tail: mark the object done when every segment is embedded.
_MAYBE_DONE = (
    _OUTBOX
    + """
local function maybe_done(key, now, outbox, notify, object_id)
  local state = redis.call('HGET', key, 'state')
  local total = redis.call('HGET', key, 'segments_total')
  if total and state ~= 'failed' and state ~= 'done' then
    local embedded = tonumber(redis.call('HGET', key, 'embedded') or '0')
    if embedded >= tonumber(total) then
      redis.call('HSET', key, 'state', 'done', 'finished_at', now)
      announce(outbox, notify, 'object.done', object_id, key, now, '')
    end
  end
end
"""
)

_MARK = (
    _MAYBE_DONE
    + """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[3]) then
  redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
  redis.call('HSET', KEYS[2], 'updated_at', ARGV[2])
  maybe_done(KEYS[2], ARGV[2], KEYS[4], ARGV[5], ARGV[4])
  redis.call('PUBLISH', KEYS[3], ARGV[4])
  return 1
end
return 0
"""
)

_SET_TOTAL = (
    _MAYBE_DONE
    + """
redis.call('HSET', KEYS[1], 'segments_total', ARGV[1], 'updated_at', ARGV[2])
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'failed' and state ~= 'done' then redis.call('HSET', KEYS[1], 'state', 'decoded') end
maybe_done(KEYS[1], ARGV[2], KEYS[3], ARGV[4], ARGV[3])
redis.call('PUBLISH', KEYS[2], ARGV[3])
return 1
"""
)

_RESET_FAILURE = (
    _MAYBE_DONE
    + """
if redis.call('HGET', KEYS[1], 'state') ~= 'failed' then return 0 end
redis.call('HDEL', KEYS[1], 'error', 'finished_at')
redis.call('PERSIST', KEYS[1])
local next_state = 'decoding'
if redis.call('HEXISTS', KEYS[1], 'segments_total') == 1 then next_state = 'decoded' end
redis.call('HSET', KEYS[1], 'state', next_state, 'updated_at', ARGV[1])
maybe_done(KEYS[1], ARGV[1], KEYS[3], '1', ARGV[2])
redis.call('PUBLISH', KEYS[2], ARGV[2])
return 1
"""
)

_EXPIRE_FINISHED = """
local function expire_finished(key, ttl)
  if tonumber(ttl) > 0 then redis.call('EXPIRE', key, ttl) end
end
"""

# A late failure (a duplicate copy of a segment, a redelivered record) never undoes `done`.
_FAIL = (
    _EXPIRE_FINISHED
    + _OUTBOX
    + """
local before = redis.call('HGET', KEYS[1], 'state')
if before == 'done' then return 0 end
redis.call('HSETNX', KEYS[1], 'created_at', ARGV[3])
redis.call('HSET', KEYS[1], 'object_id', ARGV[1], 'state', 'failed', 'error', ARGV[2],
           'updated_at', ARGV[3], 'finished_at', ARGV[3])
expire_finished(KEYS[1], ARGV[5])
redis.call('ZADD', KEYS[2], 'NX', ARGV[4], ARGV[1])
if before ~= 'failed' then announce(KEYS[4], ARGV[6], 'object.failed', ARGV[1], KEYS[1], ARGV[3], ARGV[2]) end
redis.call('PUBLISH', KEYS[3], ARGV[1])
return 1
"""
)

# Only an object no run has touched becomes `skipped`: a filter changed since must not hide a run.
_SKIP = (
    _EXPIRE_FINISHED
    + """
local state = redis.call('HGET', KEYS[1], 'state')
if state and state ~= 'skipped' then return 0 end
redis.call('HSET', KEYS[1], 'object_id', ARGV[1], 'source_uri', ARGV[2], 'state', 'skipped', 'error', ARGV[3],
           'created_at', ARGV[4], 'updated_at', ARGV[4], 'finished_at', ARGV[4])
expire_finished(KEYS[1], ARGV[6])
redis.call('ZADD', KEYS[2], 'NX', ARGV[5], ARGV[1])
redis.call('PUBLISH', KEYS[3], ARGV[1])
return 1
"""
)

_START = """
redis.call('HSETNX', KEYS[1], 'created_at', ARGV[2])
redis.call('HSETNX', KEYS[1], 'state', 'decoding')
redis.call('HSET', KEYS[1], 'object_id', ARGV[3], 'source_uri', ARGV[1], 'updated_at', ARGV[2])
redis.call('ZADD', KEYS[2], 'NX', ARGV[4], ARGV[3])
redis.call('PUBLISH', KEYS[3], ARGV[3])
return 1
"""


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _flag(value: bool) -> str:
    return "1" if value else "0"


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


_WEEK_S = 7 * 24 * 3600
_MAX_ERROR_CHARS = 2000


class ProgressSettings(Protocol):
    key_prefix: str
    failed_progress_ttl_s: int


class ProgressStore:
    def __init__(self, redis: Redis, keys: RedisKeys, marker_ttl_s: int = _WEEK_S, failed_ttl_s: int = _WEEK_S) -> None:
        self._redis = redis
        self._keys = keys
        self._marker_ttl_s = marker_ttl_s
        self._failed_ttl_s = failed_ttl_s
        self._skip = redis.register_script(_SKIP)
        self._mark = redis.register_script(_MARK)
        self._set_total = redis.register_script(_SET_TOTAL)
        self._start = redis.register_script(_START)
        self._reset_failure = redis.register_script(_RESET_FAILURE)
        self._fail = redis.register_script(_FAIL)

    @classmethod
    def for_worker(cls, redis: Redis, settings: ProgressSettings) -> ProgressStore:
        """The store a stage writes: the worker's key prefix and failed-progress TTL."""
        return cls(redis, RedisKeys(settings.key_prefix), failed_ttl_s=settings.failed_progress_ttl_s)

    async def start(self, object_id: str, source_uri: str, pipe: Pipeline | None = None) -> None:
        """``pipe``: queue the write there (one command) instead of running it (reconcile)."""
        now = datetime.now(UTC)
        await self._start(
            keys=[self._keys.progress(object_id), self._keys.objects(), self._keys.progress_channel()],
            args=[source_uri, now.isoformat(), object_id, now.timestamp()],
            client=pipe,
        )

    async def is_marked(self, stage: StageCounter, segment_id: str) -> bool:
        return bool(await self._redis.exists(self._keys.done(stage, segment_id)))

    async def mark(self, stage: StageCounter, object_id: str, segment_id: str) -> bool:
        """Count a segment as finished by a stage; False if it was already counted."""
        return bool(await self.queue_mark(self._redis, stage, object_id, segment_id))

    async def queue_mark(
        self, client: Redis | Pipeline, stage: StageCounter, object_id: str, segment_id: str, *, notify: bool = True
    ) -> Any:
        """``mark`` on ``client``: with a pipeline, one queued command whose reply is 1 if newly
        counted. ``notify``: announce the object's ``done`` in the outbox if this completes it."""
        return await self._mark(
            keys=[
                self._keys.done(stage, segment_id),
                self._keys.progress(object_id),
                self._keys.progress_channel(),
                self._keys.outcomes(),
            ],
            args=[stage, _now(), self._marker_ttl_s, object_id, _flag(notify)],
            client=client,
        )

    async def set_total(
        self, object_id: str, segments_total: int, pipe: Pipeline | None = None, *, notify: bool = True
    ) -> None:
        await self._set_total(
            keys=[self._keys.progress(object_id), self._keys.progress_channel(), self._keys.outcomes()],
            args=[segments_total, _now(), object_id, _flag(notify)],
            client=pipe,
        )

    async def fail(self, object_id: str, error: str) -> bool:
        """Mark the object failed; False (and no change) if it is already ``done``."""
        return bool(await self.queue_fail(self._redis, object_id, error))

    async def queue_fail(self, client: Redis | Pipeline, object_id: str, error: str, *, notify: bool = True) -> Any:
        """``fail`` on ``client``: with a pipeline, one queued command whose reply is 1 if it failed the object."""
        now = datetime.now(UTC)
        return await self._fail(
            keys=[
                self._keys.progress(object_id),
                self._keys.objects(),
                self._keys.progress_channel(),
                self._keys.outcomes(),
            ],
            args=[
                object_id,
                safe_text(error, _MAX_ERROR_CHARS),
                now.isoformat(),
                now.timestamp(),
                self._failed_ttl_s,
                _flag(notify),
            ],
            client=client,
        )

    async def skip(self, object_id: str, source_uri: str, reason: str) -> bool:
        """Show that a filter declined the object; False if a run already owns its progress."""
        now = datetime.now(UTC)
        result = await self._skip(
            keys=[self._keys.progress(object_id), self._keys.objects(), self._keys.progress_channel()],
            args=[
                object_id,
                safe_text(source_uri),
                safe_text(reason, _MAX_ERROR_CHARS),
                now.isoformat(),
                now.timestamp(),
                self._failed_ttl_s,
            ],
        )
        return bool(result)

    async def reset_failure(self, object_id: str) -> bool:
        """Undo ``failed`` before a dead letter is replayed; False if the object was not failed."""
        result = await self._reset_failure(
            keys=[self._keys.progress(object_id), self._keys.progress_channel(), self._keys.outcomes()],
            args=[_now(), object_id],
        )
        return bool(result)

    async def get(self, object_id: str) -> ObjectProgress | None:
        raw = await self._redis.hgetall(self._keys.progress(object_id))
        if not raw:
            return None
        fields = {reply_text(k): reply_text(v) for k, v in raw.items()}
        return ObjectProgress(
            object_id=object_id,
            source_uri=fields.get("source_uri", ""),
            state=ObjectState(fields.get("state", ObjectState.DECODING.value)),
            segments_total=int(fields["segments_total"]) if "segments_total" in fields else None,
            decoded=int(fields.get("decoded", 0)),
            captioned=int(fields.get("captioned", 0)),
            transcribed=int(fields.get("transcribed", 0)),
            embedded=int(fields.get("embedded", 0)),
            error=fields.get("error"),
            created_at=_time(fields.get("created_at")),
            updated_at=_time(fields.get("updated_at")),
        )

    async def list_ids(self, limit: int = 100) -> list[str]:
        """Newest object ids; ids whose progress hash has expired are dropped from the index."""
        raw = await self._redis.zrevrange(self._keys.objects(), 0, limit - 1)
        ids = [reply_text(i) for i in raw if isinstance(i, bytes | str)]
        if not ids:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for oid in ids:
                pipe.exists(self._keys.progress(oid))
            alive = await pipe.execute()
        gone = [oid for oid, present in zip(ids, alive, strict=True) if not present]
        if gone:
            await self._redis.zrem(self._keys.objects(), *gone)
        return [oid for oid, present in zip(ids, alive, strict=True) if present]
