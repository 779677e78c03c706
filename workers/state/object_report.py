"""One object's progress and per-segment results as plain JSON-able data: what ``capstream
results``, the API's ``/objects/{id}`` and the chaos collector show."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from workers.settings import CommonSettings
from workers.state.keys import RedisKeys
from workers.state.progress import ProgressStore
from workers.state.results import ResultStore


async def object_report(redis: Redis, settings: CommonSettings, object_id: str) -> dict[str, Any] | None:
    """Progress plus per-segment results of one object, as plain JSON-able data."""
    keys = RedisKeys(settings.key_prefix)
    progress = await ProgressStore(redis, keys).get(object_id)
    if progress is None:
        return None
    rows = await ResultStore(redis, keys).get(object_id)
    return {
        "object_id": object_id,
        "source_uri": progress.source_uri,
        "state": progress.state.value,
        "error": progress.error,
        "segments_total": progress.segments_total,
        "segments": [
            {
                "segment_index": r.segment_index,
                "segment_id": r.segment_id,
                "start_s": r.start_s,
                "end_s": r.end_s,
                "caption": r.caption,
                "modality": r.modality,
                "caption_model": r.caption_model,
                "embedding_model": r.model,
                "embedding_dim": r.dim,
            }
            for r in rows
        ],
    }
