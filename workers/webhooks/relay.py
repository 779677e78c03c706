"""``OutcomeRelay``: the outbox stream onto the outcomes topic, at least once.

Steps of one round (``relay_once``):
1. Take entries: this relay's own unacknowledged ones first (a send that failed), then
   entries another relay took and left idle longer than ``claim_idle_s`` (it stopped), then
   new ones (``XREADGROUP >``, blocking briefly).
2. Send each as an ``ObjectOutcome`` keyed by object id (per-object order) and await every ack.
3. Acknowledge and delete them in one pipeline.

A crash between 2 and 3 sends them again: the outcome id is the stream entry's id, the same on
every send, and a webhook delivery is deduplicated on it. Every webhooks worker runs a relay;
the stream's consumer group shares the entries between them.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from datetime import UTC, datetime
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from schemas.outcome import ObjectOutcome
from workers.state.keys import RedisKeys
from workers.state.replies import reply_text

RELAY_GROUP = "relay"
_BATCH = 100
_BLOCK_MS = 500
_OUTAGE_PAUSE_MAX_S = 5.0

log = structlog.get_logger("capstream.webhooks.relay")


def outcome_of(entry_id: str, fields: dict[str, str]) -> ObjectOutcome:
    total = fields.get("segments_total", "")
    return ObjectOutcome(
        outcome_id=f"{fields['object_id']}@{entry_id}",
        event=fields["event"],  # type: ignore[arg-type]  # validated by the model
        object_id=fields["object_id"],
        source_uri=fields.get("source_uri", ""),
        error=fields.get("error") or None,
        segments_total=int(total) if total else None,
        at=datetime.fromisoformat(fields["at"]) if fields.get("at") else datetime.now(UTC),
    )


class OutcomeRelay:
    def __init__(
        self, redis: Redis, keys: RedisKeys, producer: AIOKafkaProducer, topic: str, claim_idle_s: float
    ) -> None:
        self._redis = redis
        self._stream = keys.outcomes()
        self._producer = producer
        self._topic = topic
        self._claim_idle_ms = int(claim_idle_s * 1000)
        self._consumer = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until ``stop``; an outage of Redis or the broker is waited out, never fatal."""
        pause = 0.2
        while not stop.is_set():
            try:
                await self.relay_once()
                pause = 0.2
            except (RedisConnectionError, RedisTimeoutError, OSError, KafkaError) as exc:
                log.warning("outcome_relay_waiting", error=f"{type(exc).__name__}: {exc}", pause_s=pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, _OUTAGE_PAUSE_MAX_S)

    async def relay_once(self, block_ms: int = _BLOCK_MS) -> int:
        """One round (the module's steps); how many outcomes it sent."""
        entries = await self._take(block_ms)
        if not entries:
            return 0
        outcomes = []
        for entry_id, fields in entries:
            try:
                outcomes.append(outcome_of(entry_id, fields))
            except (KeyError, ValueError) as exc:  # not ours to block on: logged, acknowledged
                log.error("outcome_unreadable", entry_id=entry_id, error=str(exc))
        sends = [await self._producer.send(self._topic, key=o.object_id.encode(), value=o.to_bytes()) for o in outcomes]
        await asyncio.gather(*sends)
        ids = [entry_id for entry_id, _ in entries]
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xack(self._stream, RELAY_GROUP, *ids)
            pipe.xdel(self._stream, *ids)
            await pipe.execute()
        return len(outcomes)

    async def _take(self, block_ms: int) -> list[tuple[str, dict[str, str]]]:
        try:
            own = await self._read("0", block_ms=None)
            if own:
                return own
            reply: list[Any] = await self._redis.xautoclaim(  # [next id, entries, deleted ids]
                self._stream, RELAY_GROUP, self._consumer, self._claim_idle_ms, "0-0", count=_BATCH
            )
            if reply[1]:
                return _entries(reply[1])
            return await self._read(">", block_ms=block_ms)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self._create_group()
            return []

    async def _read(self, start: str, block_ms: int | None) -> list[tuple[str, dict[str, str]]]:
        reply: Any = await self._redis.xreadgroup(  # [[stream, entries]] (RESP2)
            RELAY_GROUP, self._consumer, {self._stream: start}, count=_BATCH, block=block_ms
        )
        return [e for _, entries in reply or [] for e in _entries(entries)]

    async def _create_group(self) -> None:
        """From the stream's first entry: outcomes written before any relay ran are sent too."""
        try:
            await self._redis.xgroup_create(self._stream, RELAY_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise


def _entries(raw: list[Any]) -> list[tuple[str, dict[str, str]]]:
    """``(id, fields)`` of stream entries (an entry deleted while pending has no fields: it is
    logged as unreadable and acknowledged)."""
    return [
        (reply_text(entry_id), {reply_text(k): reply_text(v) for k, v in (fields or {}).items()})
        for entry_id, fields in raw
    ]
