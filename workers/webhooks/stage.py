"""``WebhookStage``: each outcome on ``media.outcomes`` POSTed to the webhooks that want it.

Steps for one outcome:
1. Its collection, from its source (the same rules that file its rows in the index).
2. The webhooks registered for that collection and event, minus those that already
   acknowledged this outcome (a marker per webhook and outcome: a redelivered record is not
   sent again).
3. To each of them at once: up to ``CAPSTREAM_WEBHOOK_MAX_ATTEMPTS`` signed POSTs, waiting
   ``CAPSTREAM_WEBHOOK_BACKOFF_S`` doubling (to ``_BACKOFF_MAX_S``) between them; a 2xx sets the
   marker.
4. The webhooks that never said 2xx: one dead letter for the outcome, reason
   ``webhook_failed``, naming each URL and its last answer. ``capstream dlq replay --stage
   webhooks`` sends it again to those (the others have their markers).

Each outcome holds one in-flight slot while it is delivered, so a hung receiver slows only
deliveries (``CAPSTREAM_WEBHOOK_MAX_IN_FLIGHT`` at once), never the stages before it. The
relay (``OutcomeRelay``) runs beside the consumer loop, started in ``setup``.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import AsyncGenerator
from datetime import UTC, datetime

import structlog
from aiokafka import AIOKafkaProducer
from pydantic import ValidationError
from redis.asyncio import Redis

from schemas.dead_letter import DeadLetter
from schemas.outcome import ObjectOutcome, WebhookObject, WebhookPayload
from workers.runtime.dead_letters import dead_letter_for
from workers.runtime.errors import PermanentError
from workers.runtime.kafka import make_producer
from workers.runtime.outbound import public_uri
from workers.runtime.redaction import safe_text
from workers.runtime.stage import Output, RecordContext, Stage
from workers.settings import WebhookSettings
from workers.state.keys import RedisKeys
from workers.webhooks.poster import WebhookPoster
from workers.webhooks.relay import OutcomeRelay
from workers.webhooks.store import Webhook, WebhookStore

_DELIVERED_TTL_S = 30 * 24 * 3600  # as long as the outcomes' dead letters are kept


def delivery_id(webhook_id: str, outcome_id: str) -> str:
    """The same on every try of one outcome to one webhook: receivers dedupe on it."""
    return "whd_" + hashlib.sha256(f"{webhook_id}\n{outcome_id}".encode()).hexdigest()[:24]


class WebhookDeliveryFailed(PermanentError):
    def __init__(self, message: str, object_id: str) -> None:
        super().__init__("webhook_failed", message, object_id=object_id)


class WebhookStage(Stage[ObjectOutcome]):
    name = "webhooks"

    def __init__(self, settings: WebhookSettings, redis: Redis, poster: WebhookPoster | None = None) -> None:
        self.settings = settings
        self.input_topic = settings.topic_outcomes
        self.output_topics = ()  # a delivery that never succeeded goes to the DLQ, as a letter
        self.redis = redis
        self.keys = RedisKeys(settings.key_prefix)
        self.store = WebhookStore(redis, self.keys)
        self.collections = settings.collection_rules()
        self.poster = poster or WebhookPoster(settings.webhook_timeout_s, settings.webhook_allow_private)
        self._relay_producer: AIOKafkaProducer | None = None
        self._relay_stop = asyncio.Event()
        self._relay_task: asyncio.Task[None] | None = None
        self.relay: OutcomeRelay | None = None

    async def setup(self) -> None:
        self._relay_producer = make_producer(self.settings)
        await self._relay_producer.start()
        self.relay = OutcomeRelay(
            self.redis,
            self.keys,
            self._relay_producer,
            self.settings.topic_outcomes,
            self.settings.webhook_claim_idle_s,
        )
        self._relay_task = asyncio.create_task(self.relay.run(self._relay_stop), name="outcome-relay")

    async def close(self) -> None:
        self._relay_stop.set()
        if self._relay_task is not None:
            await self._relay_task
        if self._relay_producer is not None:
            await self._relay_producer.stop()
        await self.poster.close()

    def parse(self, value: bytes) -> ObjectOutcome:
        try:
            return ObjectOutcome.model_validate_json(value)
        except ValidationError as exc:
            raise PermanentError("malformed_message", f"not an ObjectOutcome: {exc}") from exc

    def object_id_of(self, item: ObjectOutcome | None, ctx: RecordContext) -> str | None:
        return item.object_id if item is not None else ctx.key

    async def process(self, item: ObjectOutcome, ctx: RecordContext) -> AsyncGenerator[Output, None]:
        log = ctx.log.bind(object_id=item.object_id, outcome_id=item.outcome_id, event=item.event)
        collection = self.collections.of_uri(item.source_uri)
        hooks = [h for h in await self.store.all() if h.wants(item.event, collection)]
        if not hooks or collection is None:
            return  # nobody to tell: done
        data = WebhookObject(
            object_id=item.object_id,
            source_uri=public_uri(item.source_uri),
            collection=collection,
            state="done" if item.event == "object.done" else "failed",
            error=item.error,
            segments_total=item.segments_total,
            finished_at=item.at,
        )
        failures = [
            f for f in await asyncio.gather(*(self._deliver(h, item, data, ctx, log) for h in hooks)) if f is not None
        ]
        if failures:
            letter = dead_letter_for(
                self.name, ctx, WebhookDeliveryFailed("; ".join(failures), item.object_id), "transient_exhausted"
            )
            assert isinstance(letter.value, DeadLetter)
            yield Output(
                letter.topic,
                letter.key,
                letter.value.model_copy(update={"attempts": self.settings.webhook_max_attempts}),
            )

    async def _deliver(
        self,
        hook: Webhook,
        item: ObjectOutcome,
        data: WebhookObject,
        ctx: RecordContext,
        log: structlog.typing.FilteringBoundLogger,
    ) -> str | None:
        """None once ``hook`` has the outcome; else what went wrong (for the dead letter)."""
        marker = self.keys.webhook_delivered(hook.webhook_id, item.outcome_id)
        if await self.redis.exists(marker):
            return None
        payload = WebhookPayload(
            id=delivery_id(hook.webhook_id, item.outcome_id), type=item.event, created_at=datetime.now(UTC), data=data
        )
        body = payload.to_bytes()
        headers = {"Capstream-Event": item.event, "Capstream-Delivery": payload.id}
        posts = self.settings.webhook_max_attempts
        log = log.bind(webhook_id=hook.webhook_id, delivery_id=payload.id)
        for attempt in range(1, posts + 1):
            result = await self.poster.post(hook.url, hook.secret, body, headers)
            if result.ok:
                await self.redis.set(marker, "1", ex=_DELIVERED_TTL_S)
                self._count(ctx, "delivered")
                log.info("webhook_delivered", attempt=attempt)
                return None
            self._count(ctx, "failed")
            log.warning("webhook_post_failed", attempt=attempt, detail=result.detail)
            if result.permanent:
                break
            if attempt < posts:
                await asyncio.sleep(self._backoff(attempt))
        return safe_text(f"{hook.webhook_id} {result.detail} after {attempt} POST(s)")

    def _backoff(self, attempt: int) -> float:
        base = min(self.settings.webhook_backoff_s * 2 ** (attempt - 1), self.settings.webhook_backoff_max_s)
        return base * random.uniform(0.8, 1.2)

    @staticmethod
    def _count(ctx: RecordContext, result: str) -> None:
        ctx.metrics.metrics.webhook_posts.labels(ctx.metrics.stage, result).inc()
