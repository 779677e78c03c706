"""Cursors of ``GET /search``: the next page of a query, stable under concurrent inserts.

A cursor pins the table version its first page searched (LanceDB time travel: rows indexed
since do not reorder the pages) and remembers the segment ids already shown, which later pages
never return again. Ranking depends on how deep the legs fetch (hybrid scores are normalised
over what each leg returned), so an offset alone could repeat or skip a hit between pages;
excluding what was shown cannot. Each page gets a new cursor id (a cursor is never changed, so
fetching the same page twice gives the same page), kept in Redis ``CAPSTREAM_SEARCH_CURSOR_TTL_S``
and bound to the API key that made it.
"""

from __future__ import annotations

import hashlib
import json
import secrets

from pydantic import BaseModel, ValidationError
from redis.asyncio import Redis

from workers.search.query import SearchQuery
from workers.state.keys import RedisKeys


class CursorGone(Exception):
    """Unknown, expired, or another key's cursor: the client starts the query again."""


class CursorMismatch(Exception):
    """The cursor belongs to another query."""


class SearchCursor(BaseModel):
    key_id: str | None  # None: made without auth (--no-auth)
    fingerprint: str
    version: int
    shown: list[str]


def fingerprint(query: SearchQuery) -> str:
    """What makes two requests the same query (the key's scope included)."""
    fields = query.model_dump(mode="json")
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:32]


class CursorStore:
    def __init__(self, redis: Redis, keys: RedisKeys, ttl_s: int) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl_s = ttl_s

    async def save(self, cursor: SearchCursor) -> str:
        cursor_id = secrets.token_urlsafe(18)
        await self.redis.set(self.keys.search_cursor(cursor_id), cursor.model_dump_json(), ex=self.ttl_s)
        return cursor_id

    async def load(self, cursor_id: str, key_id: str | None, query: SearchQuery) -> SearchCursor:
        if not cursor_id or len(cursor_id) > 64:
            raise CursorGone("no such cursor")
        raw = await self.redis.get(self.keys.search_cursor(cursor_id))
        try:
            cursor = SearchCursor.model_validate_json(raw) if raw is not None else None
        except ValidationError:
            cursor = None
        if cursor is None or cursor.key_id != key_id:
            raise CursorGone("the cursor is unknown or expired: search again from the first page")
        if cursor.fingerprint != fingerprint(query):
            raise CursorMismatch("the cursor belongs to another query: send the same parameters with it")
        return cursor
