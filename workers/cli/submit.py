"""``capstream submit``: upload files and publish the S3 ObjectCreated events for them."""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from schemas.events import parse_event
from schemas.progress import ObjectProgress
from workers.bridge.translate import SUBMIT_MARKER
from workers.cli.progress_view import progress_view
from workers.s3_client import s3_client
from workers.settings import S3Settings
from workers.stages import ensure_pipeline_topics
from workers.state import ProgressStore, RedisKeys
from workers.state.progress_feed import ProgressFeed

# Changes arrive on the progress channel within milliseconds; this slow re-read only bounds how
# long a message lost to a Redis reconnect can hide a change (it used to be the 0.5 s poll).
REREAD_S = 5.0


@dataclass(frozen=True)
class Submitted:
    name: str
    key: str
    object_id: str
    event: dict[str, Any]


def s3_put_event(bucket: str, key: str, size: int, etag: str, region: str) -> dict[str, Any]:
    """The notification AWS S3 sends for a PUT (key URL-form-encoded, as S3 does)."""
    now = datetime.now(UTC)
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": region,
                "eventTime": now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                    "object": {
                        "key": quote_plus(key, safe="/"),
                        "size": size,
                        "eTag": etag,
                        "sequencer": f"{time.time_ns():020X}",
                    },
                },
            }
        ]
    }


def expand_paths(paths: list[Path]) -> list[tuple[Path, str]]:
    """Files to upload with their object keys; directories contribute their files."""
    found: list[tuple[Path, str]] = []
    for path in paths:
        if path.is_dir():
            found += [(f, f.relative_to(path.parent).as_posix()) for f in sorted(path.rglob("*")) if f.is_file()]
        elif path.is_file():
            found.append((path, path.name))
        else:
            raise FileNotFoundError(f"no such file or directory: {path}")
    return found


async def submit(paths: list[Path], settings: S3Settings) -> list[Submitted]:
    files = expand_paths(paths)
    await ensure_pipeline_topics(settings)
    submitted: list[Submitted] = []
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        async with s3_client(settings) as s3:
            for path, key in files:
                body = path.read_bytes()
                # The marker tells the S3 event bridge this upload's event is published here.
                resp = await s3.put_object(
                    Bucket=settings.s3_bucket, Key=key, Body=body, Metadata={SUBMIT_MARKER: "published"}
                )
                etag = str(resp.get("ETag") or hashlib.md5(body).hexdigest()).strip('"')
                event = s3_put_event(settings.s3_bucket, key, len(body), etag, settings.s3_region)
                obj = parse_event(event).objects[0]
                await producer.send_and_wait(
                    settings.topic_objects, json.dumps(event).encode(), key=f"{settings.s3_bucket}/{key}".encode()
                )
                submitted.append(Submitted(name=str(path), key=key, object_id=obj.object_id, event=event))
    finally:
        await producer.stop()
    return submitted


async def wait_for(
    object_ids: list[str],
    names: dict[str, str],
    settings: S3Settings,
    timeout_s: float,
    show: bool = True,
    reread_s: float = REREAD_S,
) -> dict[str, ObjectProgress | None]:
    """Follow progress until every object is done or failed (or timeout); draw it on stderr.

    Changes arrive on the progress channel; everything is re-read at least every ``reread_s``
    as well, because a pub/sub message lost to a reconnect is never sent again.
    """
    redis = Redis.from_url(settings.redis_url)
    keys = RedisKeys(settings.key_prefix)
    store = ProgressStore(redis, keys)
    deadline = time.monotonic() + timeout_s
    try:
        # Subscribed before the first read: a change after that read is announced, not lost.
        async with ProgressFeed.subscribe(redis, keys) as feed:
            with progress_view(names, sys.stderr, show) as view:
                states = {oid: await store.get(oid) for oid in object_ids}
                next_reread = time.monotonic() + reread_s
                while True:
                    if view is not None:
                        view.update(states)
                    now = time.monotonic()
                    if all(p is not None and p.finished for p in states.values()) or now >= deadline:
                        return states
                    # Other objects' changes keep the feed busy: the re-read still comes on time.
                    changed = await feed.changes(min(next_reread, deadline) - now)
                    if changed is None or time.monotonic() >= next_reread:
                        changed = set(states)
                        next_reread = time.monotonic() + reread_s
                    for oid in changed & states.keys():
                        states[oid] = await store.get(oid)
    finally:
        await redis.aclose()
