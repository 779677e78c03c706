"""Read-side commands: ``status``, ``results``, ``parse-event``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from schemas.events import EventParseError, parse_event
from schemas.progress import ObjectProgress
from workers.settings import CommonSettings
from workers.state import ProgressStore, RedisKeys
from workers.state.object_report import object_report


def format_report(report: dict[str, Any], title: str | None = None) -> str:
    lines = [f"{title or report['source_uri']}  [{report['state']}]  object_id={report['object_id']}"]
    if report.get("error"):
        lines.append(f"  error: {report['error']}")
    for seg in report["segments"]:
        lines.append(
            f"  #{seg['segment_index']:<3} {seg['start_s']:7.2f}s - {seg['end_s']:7.2f}s  "
            f"{seg['embedding_model'].rsplit('/', 1)[-1]} dim={seg['embedding_dim']}  "
            f"{'said' if seg.get('modality') == 'speech' else 'caption'}={seg['caption'][:100]!r}"
        )
    return "\n".join(lines)


def format_progress(p: ObjectProgress) -> str:
    total = p.segments_total if p.segments_total is not None else "?"
    err = f"  error={p.error}" if p.error else ""
    return (
        f"{p.object_id}  {p.state.value:<8} segments={total} decoded={p.decoded} "
        f"captioned={p.captioned} transcribed={p.transcribed} embedded={p.embedded}  {p.source_uri}{err}"
    )


async def cmd_status(object_id: str | None, as_json: bool) -> int:
    settings = CommonSettings()
    redis = Redis.from_url(settings.redis_url)
    store = ProgressStore(redis, RedisKeys(settings.key_prefix))
    try:
        ids = [object_id] if object_id else await store.list_ids()
        found = [p for oid in ids if (p := await store.get(oid)) is not None]
    finally:
        await redis.aclose()
    if object_id and not found:
        sys.stderr.write(f"capstream: no object {object_id}\n")
        return 1
    if as_json:
        print(json.dumps([p.model_dump(mode="json") for p in found], indent=2))
    else:
        for p in found:
            print(format_progress(p))
    return 0


async def cmd_results(object_id: str, as_json: bool) -> int:
    settings = CommonSettings()
    redis = Redis.from_url(settings.redis_url)
    try:
        report = await object_report(redis, settings, object_id)
    finally:
        await redis.aclose()
    if report is None:
        sys.stderr.write(f"capstream: no object {object_id}\n")
        return 1
    print(json.dumps(report, indent=2) if as_json else format_report(report))
    return 0


def cmd_parse_event(source: str) -> int:
    try:
        raw = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as exc:
        sys.stderr.write(f"capstream: cannot read {source}: {exc.strerror or exc}\n")
        return 2
    try:
        batch = parse_event(raw)
    except EventParseError as exc:
        sys.stderr.write(f"capstream: invalid event ({exc.reason}): {exc}\n")
        return 2
    print(
        json.dumps(
            {
                "objects": [dict(o.model_dump(mode="json"), object_id=o.object_id) for o in batch.objects],
                "ignored": batch.ignored,
            },
            indent=2,
        )
    )
    return 0
