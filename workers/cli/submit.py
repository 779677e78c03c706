"""``capstream submit``: upload files and publish the S3 ObjectCreated events for them."""

from __future__ import annotations

import asyncio
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
from workers.runtime.kafka import ensure_topics
from workers.s3_client import s3_client
from workers.settings import S3Settings
from workers.state import ProgressStore, RedisKeys


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
    await ensure_topics(settings)
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
    object_ids: list[str], names: dict[str, str], settings: S3Settings, timeout_s: float, show: bool = True
) -> dict[str, ObjectProgress | None]:
    """Poll progress until every object is done or failed (or timeout); draw bars on stderr."""
    redis = Redis.from_url(settings.redis_url)
    store = ProgressStore(redis, RedisKeys(settings.key_prefix))
    deadline = time.monotonic() + timeout_s
    tty = sys.stderr.isatty()
    last_lines: dict[str, str] = {}
    try:
        while True:
            states = {oid: await store.get(oid) for oid in object_ids}
            if show:
                for oid, prog in states.items():
                    line = render_progress(names.get(oid, oid), prog)
                    if tty or last_lines.get(oid) != line:
                        sys.stderr.write(line + "\n")
                        last_lines[oid] = line
                if tty:
                    sys.stderr.write(f"\x1b[{len(states)}A")
            if all(p is not None and p.finished for p in states.values()) or time.monotonic() > deadline:
                if show and tty:
                    sys.stderr.write("\n" * len(states))
                return states
            await asyncio.sleep(0.5)
    finally:
        await redis.aclose()


def render_progress(name: str, prog: ObjectProgress | None, width: int = 24) -> str:
    if prog is None:
        return f"{name[:32]:<32} [{'':<{width}}] queued"
    total = prog.segments_total
    frac = (prog.embedded / total) if total else 0.0
    bar = "#" * int(frac * width)
    counts = f"{prog.embedded}/{total if total is not None else '?'} embedded, {prog.captioned} captioned"
    tail = f" error={prog.error}" if prog.error else ""
    return f"{name[:32]:<32} [{bar:<{width}}] {prog.state.value:<8} {counts}{tail}"
