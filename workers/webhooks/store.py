"""Registered webhooks, in Redis: ``capstream webhooks add|list|remove`` write them, the
webhooks stage reads them for every outcome (so an added or removed webhook counts from the
next outcome on).

The signing secret is stored as it is (not hashed like API keys): signing needs it. Whoever
can read Redis can forge this deployment's webhooks; they could also rewrite its progress.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import BaseModel, Field
from redis.asyncio import Redis

from schemas.outcome import WebhookEvent
from workers.access.collections import CollectionName
from workers.state.keys import RedisKeys
from workers.state.replies import reply_text
from workers.webhooks.signing import new_secret


class Webhook(BaseModel):
    webhook_id: str
    url: str
    collections: list[CollectionName] = Field(min_length=1)
    events: list[WebhookEvent] = Field(min_length=1)
    secret: str
    created_at: datetime

    def wants(self, event: str, collection: str | None) -> bool:
        return event in self.events and collection is not None and collection in self.collections


@dataclass
class WebhookStore:
    redis: Redis
    keys: RedisKeys

    async def add(self, url: str, collections: list[str], events: list[WebhookEvent]) -> Webhook:
        hook = Webhook(
            webhook_id="wh_" + secrets.token_hex(8),
            url=url,
            collections=sorted(set(collections)),
            events=sorted(set(events)),
            secret=new_secret(),
            created_at=datetime.now(UTC),
        )
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.keys.webhook(hook.webhook_id), mapping={"json": hook.model_dump_json()})
            pipe.sadd(self.keys.webhooks(), hook.webhook_id)
            await pipe.execute()
        return hook

    async def remove(self, webhook_id: str) -> bool:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self.keys.webhook(webhook_id))
            pipe.srem(self.keys.webhooks(), webhook_id)
            deleted, _ = await pipe.execute()
        return bool(deleted)

    async def all(self) -> list[Webhook]:
        ids = sorted(reply_text(i) for i in await self.redis.smembers(self.keys.webhooks()))
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for webhook_id in ids:
                pipe.hget(self.keys.webhook(webhook_id), "json")
            found = await pipe.execute()
        return [Webhook.model_validate(json.loads(reply_text(raw))) for raw in found if raw is not None]
