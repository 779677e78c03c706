"""The dead letters on the stages' DLQ topics: read them, choose some, replay them.

A dead letter is addressed as ``<dlq topic>/<partition>/<offset>``. Replay re-publishes the
original payload to the topic it came from, with its key, after clearing what would make the
pipeline skip it: the object's ``failed`` state and, for the decode stage, its event claim.
Every stage's DLQ is read (the stage registry lists them), the s3-events bridge's included.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from schemas.dead_letter import DeadLetter
from schemas.events import EventParseError, parse_event
from workers.runtime.kafka import read_topics
from workers.settings import CommonSettings
from workers.stages import REGISTRY, StageRegistry
from workers.state.claims import ClaimStore
from workers.state.keys import RedisKeys
from workers.state.progress import ProgressStore


@dataclass(frozen=True)
class StoredLetter:
    ref: str
    letter: DeadLetter


async def read_letters(settings: CommonSettings, registry: StageRegistry = REGISTRY) -> list[StoredLetter]:
    """Every dead letter on every stage's DLQ, oldest first per partition."""
    return [
        StoredLetter(f"{r.topic}/{r.partition}/{r.offset}", DeadLetter.model_validate_json(r.value or b""))
        for r in await read_topics(settings.kafka_bootstrap, registry.dlq_topics(settings))
    ]


def select_letters(
    letters: list[StoredLetter], refs: list[str], stage: str | None, reason: str | None
) -> list[StoredLetter]:
    chosen = [s for s in letters if not refs or s.ref in refs]
    if stage:
        chosen = [s for s in chosen if s.letter.stage == stage]
    if reason:
        chosen = [s for s in chosen if s.letter.reason == reason]
    return chosen


async def replay_letters(
    settings: CommonSettings, letters: list[StoredLetter], skipped: Callable[[StoredLetter, str], None]
) -> int:
    """Re-publish each letter's payload to its source topic; ``skipped(letter, why)`` for
    those that cannot be (their payload was too large to keep). Returns how many were."""
    redis = Redis.from_url(settings.redis_url)
    keys = RedisKeys(settings.key_prefix)
    progress = ProgressStore(redis, keys)
    claims = ClaimStore(redis, keys, ttl_s=1)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    replayed = 0
    try:
        for stored in letters:
            letter = stored.letter
            if letter.payload_truncated:
                skipped(
                    stored,
                    f"no payload (it was too large); re-publish the original record "
                    f"{letter.source_topic}/{letter.partition}/{letter.offset} instead",
                )
                continue
            for object_id in letter_object_ids(letter):
                if letter.stage == "decode":
                    await claims.release(object_id)
                await progress.reset_failure(object_id)
            await producer.send_and_wait(
                letter.source_topic, letter.payload, key=letter.key.encode() if letter.key else None
            )
            replayed += 1
        return replayed
    finally:
        await producer.stop()
        await redis.aclose()


def letter_object_ids(letter: DeadLetter) -> list[str]:
    """Objects to reset before a replay. Event records are keyed by bucket/key, not object id,
    so a decode letter's objects come from its payload."""
    if letter.stage == "decode":
        try:
            return [obj.object_id for obj in parse_event(letter.payload).objects]
        except EventParseError:
            return []
    return [letter.object_id] if letter.object_id else []
