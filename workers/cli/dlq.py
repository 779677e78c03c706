"""``capstream dlq list|show|replay``: inspect dead letters and re-inject them after a fix.

A dead letter is addressed as ``<dlq topic>/<partition>/<offset>``. Replay re-publishes the
original payload to the topic it came from, with its key, after clearing what would make the
pipeline skip it: the object's ``failed`` state and, for the decode stage, its event claim.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from redis.asyncio import Redis

from schemas.dead_letter import DeadLetter
from schemas.events import EventParseError, parse_event
from workers.runtime.kafka import dlq_topic, read_topics, stage_input_topics
from workers.settings import CommonSettings
from workers.state import ClaimStore, ProgressStore, RedisKeys


@dataclass(frozen=True)
class StoredLetter:
    ref: str
    letter: DeadLetter


def dlq_topics(settings: CommonSettings) -> list[str]:
    return [dlq_topic(t) for t in stage_input_topics(settings)]


async def read_letters(settings: CommonSettings) -> list[StoredLetter]:
    """Every dead letter on every stage's DLQ, oldest first per partition."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
    finally:
        await admin.close()
    topics = [t for t in dlq_topics(settings) if t in existing]
    if not topics:
        return []
    return [
        StoredLetter(f"{r.topic}/{r.partition}/{r.offset}", DeadLetter.model_validate_json(r.value or b""))
        for r in await read_topics(settings.kafka_bootstrap, topics)
    ]


async def replay(settings: CommonSettings, letters: list[StoredLetter]) -> int:
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
                sys.stderr.write(
                    f"capstream: {stored.ref} has no payload (it was too large); re-publish the original "
                    f"record {letter.source_topic}/{letter.partition}/{letter.offset} instead\n"
                )
                continue
            for object_id in _object_ids(letter):
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


def _object_ids(letter: DeadLetter) -> list[str]:
    """Objects to reset before a replay. Event records are keyed by bucket/key, not object id,
    so a decode letter's objects come from its payload."""
    if letter.stage == "decode":
        try:
            return [obj.object_id for obj in parse_event(letter.payload).objects]
        except EventParseError:
            return []
    return [letter.object_id] if letter.object_id else []


def select(letters: list[StoredLetter], refs: list[str], stage: str | None, reason: str | None) -> list[StoredLetter]:
    chosen = [s for s in letters if not refs or s.ref in refs]
    if stage:
        chosen = [s for s in chosen if s.letter.stage == stage]
    if reason:
        chosen = [s for s in chosen if s.letter.reason == reason]
    return chosen


def _summary(s: StoredLetter) -> dict[str, Any]:
    d = s.letter.model_dump(mode="json", exclude={"payload"})
    return {"ref": s.ref, **d, "payload_bytes": len(s.letter.payload)}


async def cmd_dlq(action: str, refs: list[str], stage: str | None, reason: str | None, as_json: bool) -> int:
    settings = CommonSettings()
    letters = select(await read_letters(settings), refs, stage, reason)
    if action == "list":
        if as_json:
            print(json.dumps([_summary(s) for s in letters], indent=2))
        for s in [] if as_json else letters:
            lt = s.letter
            print(f"{s.ref}  {lt.stage:<7} {lt.reason:<20} object={lt.object_id}  {lt.message[:80]}")
        return 0
    if action == "show":
        if not refs or not letters:
            sys.stderr.write("capstream: dlq show needs existing refs (see `capstream dlq list`)\n")
            return 1
        for s in letters:
            payload = s.letter.payload.decode(errors="replace")
            print(
                json.dumps(
                    {**_summary(s), "payload": payload if len(payload) < 4000 else payload[:4000] + "..."}, indent=2
                )
            )
        return 0
    if not refs and not (stage or reason):
        sys.stderr.write("capstream: dlq replay needs refs, --stage or --reason (refusing to replay everything)\n")
        return 2
    count = await replay(settings, letters)
    print(f"replayed {count} dead letter(s)")
    return 0
