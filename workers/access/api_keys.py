"""API keys of ``capstream serve``: each scoped to collections, stored hashed, shown once.

A key reads ``csk_<id>_<secret>``. Redis keeps, under the id, the key's name, collections and
an scrypt hash of the secret (``hashlib.scrypt``, n=2**14, r=8, p=1: ~16 MiB and tens of ms
per check, so a leaked Redis dump is not a list of usable keys). A server checks a secret once
with scrypt (~80 ms of CPU on this 2-core machine, on a thread) and then remembers the token's
SHA-256 for ``VERIFIED_TTL_S``; the record itself is
read on every request, so a revocation takes effect on the next one.

The per-key rate limit is a fixed one-minute window counted by one Lua script (INCR, and the
window's expiry on its first request).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pydantic import BaseModel
from redis.asyncio import Redis

from workers.state.keys import RedisKeys
from workers.state.replies import reply_text

TOKEN_PREFIX = "csk_"
VERIFIED_TTL_S = 60.0
# Wrong secrets for one key id cost a scrypt each: past this many a minute, that key id's
# unverified tokens are refused (429) without hashing, so a flood costs Redis reads, not CPU.
FAILED_CHECKS_PER_MIN = 10
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}
_RATE_WINDOW_S = 60

# KEYS[1] = this window's counter; ARGV[1] = window length in ms. Returns {count, ms left}.
_RATE = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return {n, redis.call('PTTL', KEYS[1])}
"""


class ApiKey(BaseModel):
    key_id: str
    name: str
    collections: list[str]
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class RateLimited(Exception):
    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"rate limit reached; retry after {retry_after_s} s")
        self.retry_after_s = retry_after_s


def _hash(secret: str, salt: bytes) -> bytes:
    return hashlib.scrypt(secret.encode(), salt=salt, **_SCRYPT)


def split_token(token: str) -> tuple[str, str] | None:
    """``(key_id, secret)`` of a well-formed token, else None."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    key_id, sep, secret = token.removeprefix(TOKEN_PREFIX).partition("_")
    if not sep or len(key_id) != 16 or not secret or len(secret) > 128:
        return None
    return key_id, secret


@dataclass
class ApiKeyStore:
    redis: Redis
    keys: RedisKeys
    _verified: dict[str, tuple[str, float]] = field(default_factory=dict)  # sha256(token) -> key id, until

    def __post_init__(self) -> None:
        self._rate = self.redis.register_script(_RATE)

    async def create(self, collections: list[str], name: str = "") -> tuple[ApiKey, str]:
        """A new key and its token (the only time the token exists outside the caller)."""
        if not collections:
            raise ValueError("an API key needs at least one collection")
        key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32).replace("_", "-")
        salt = secrets.token_bytes(16)
        key = ApiKey(key_id=key_id, name=name, collections=sorted(set(collections)), created_at=datetime.now(UTC))
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                self.keys.api_key(key_id),
                mapping={
                    "name": name,
                    "collections": json.dumps(key.collections),
                    "salt": salt.hex(),
                    "hash": _hash(secret, salt).hex(),
                    "created_at": key.created_at.isoformat(),
                },
            )
            pipe.sadd(self.keys.api_keys(), key_id)
            await pipe.execute()
        return key, f"{TOKEN_PREFIX}{key_id}_{secret}"

    async def get(self, key_id: str) -> ApiKey | None:
        raw = await self.redis.hgetall(self.keys.api_key(key_id))
        if not raw:
            return None
        d = {reply_text(k): reply_text(v) for k, v in raw.items()}
        return ApiKey(
            key_id=key_id,
            name=d.get("name", ""),
            collections=json.loads(d["collections"]),
            created_at=datetime.fromisoformat(d["created_at"]),
            revoked_at=datetime.fromisoformat(d["revoked_at"]) if d.get("revoked_at") else None,
        )

    async def all(self) -> list[ApiKey]:
        ids = sorted(reply_text(m) for m in await self.redis.smembers(self.keys.api_keys()))
        found = [await self.get(key_id) for key_id in ids]
        return sorted((k for k in found if k is not None), key=lambda k: k.created_at)

    async def revoke(self, key_id: str) -> bool:
        """Mark the key revoked (kept for the listing); False if there is no such key."""
        if not await self.redis.exists(self.keys.api_key(key_id)):
            return False
        await self.redis.hsetnx(self.keys.api_key(key_id), "revoked_at", datetime.now(UTC).isoformat())
        return True

    async def verify(self, token: str) -> ApiKey | None:
        """The active key a token is, or None (malformed, unknown, wrong secret, revoked)."""
        parts = split_token(token)
        if parts is None:
            return None
        key_id, secret = parts
        digest = hashlib.sha256(token.encode()).hexdigest()
        remembered = self._verified.get(digest)
        if remembered is None or remembered[1] < time.monotonic():
            raw = await self.redis.hmget(self.keys.api_key(key_id), ["salt", "hash"])
            if raw[0] is None or raw[1] is None:
                return None
            failures = self.keys.rate(f"{key_id}:failed", int(time.time()) // _RATE_WINDOW_S)
            if int(await self.redis.get(failures) or 0) >= FAILED_CHECKS_PER_MIN:
                raise RateLimited(_RATE_WINDOW_S - int(time.time()) % _RATE_WINDOW_S)
            # ~80 ms of CPU: off the event loop.
            computed = await asyncio.to_thread(_hash, secret, bytes.fromhex(reply_text(raw[0])))
            if not hmac.compare_digest(computed, bytes.fromhex(reply_text(raw[1]))):
                await self._rate(keys=[failures], args=[_RATE_WINDOW_S * 1000])
                return None
            self._verified = {d: v for d, v in self._verified.items() if v[1] >= time.monotonic()}
            self._verified[digest] = (key_id, time.monotonic() + VERIFIED_TTL_S)
        key = await self.get(key_id)
        return key if key is not None and key.active else None

    async def take(self, key_id: str, per_minute: int) -> None:
        """Count one request of ``key_id``; RateLimited when over ``per_minute`` this window."""
        window = int(time.time()) // _RATE_WINDOW_S
        count, pttl = await self._rate(keys=[self.keys.rate(key_id, window)], args=[_RATE_WINDOW_S * 1000])
        if int(count) > per_minute:
            raise RateLimited(max(1, -(-int(pttl) // 1000)))
