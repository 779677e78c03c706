"""Read back what the pipeline produced, once every worker has stopped: the output topics, the
dead-letter topics, the search index's rows and the result view (``capstream results``).

The result view is read through ``object_report``, the function behind ``capstream results``
(200 CLI processes would cost minutes of imports on two cores); a few objects also go
through the real command, and its answer must agree.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections import Counter
from typing import Any

import structlog
from pydantic import BaseModel, ConfigDict
from redis.asyncio import Redis

from loadtest.chaos.verifier import Observed, SeenSegment, segment_topics
from schemas.dead_letter import DeadLetter
from workers.index.table import open_table
from workers.index.writer import SegmentIndex
from workers.runtime.kafka import read_topics
from workers.settings import IndexSettings
from workers.stages import REGISTRY
from workers.state.object_report import object_report

CLI_SAMPLE = 3

log = structlog.get_logger("capstream.chaos")


class _Seen(BaseModel):
    """The fields of a segment batch, speech chunk, caption, transcript or embedding that place it
    (the rest ignored)."""

    model_config = ConfigDict(extra="ignore")
    object_id: str
    segment_id: str
    segment_index: int
    start_s: float
    end_s: float

    def seen(self) -> SeenSegment:
        return SeenSegment(self.object_id, self.segment_id, self.segment_index, self.start_s, self.end_s)


async def _topic(bootstrap: str, topic: str) -> list[SeenSegment]:
    return [_Seen.model_validate_json(r.value or b"").seen() for r in await read_topics(bootstrap, [topic])]


def index_rows(settings: IndexSettings) -> list[SeenSegment]:
    index = SegmentIndex(settings)
    table = open_table(index.db(), index.table_name)
    if table is None:
        return []
    columns = ["object_id", "segment_id", "segment_index", "start_s", "end_s"]
    rows: list[dict[str, Any]] = table.search().select(columns).limit(10_000_000).to_list()
    return [SeenSegment(r["object_id"], r["segment_id"], r["segment_index"], r["start_s"], r["end_s"]) for r in rows]


async def collect(settings: IndexSettings, object_ids: list[str], env: dict[str, str]) -> Observed:
    bootstrap = settings.kafka_bootstrap
    seen = Observed()
    for stage, topic in segment_topics(settings):  # decode's are its segments and its speech chunks
        seen.outputs.setdefault(stage, []).extend(await _topic(bootstrap, topic))
    letters = await read_topics(bootstrap, REGISTRY.dlq_topics(settings))
    seen.dead_letters = Counter(
        letter.object_id for r in letters if (letter := DeadLetter.model_validate_json(r.value or b"")).object_id
    )
    seen.index_rows = await asyncio.to_thread(index_rows, settings)
    redis = Redis.from_url(settings.redis_url)
    try:
        for oid in object_ids:
            report = await object_report(redis, settings, oid)
            if report is not None:
                seen.states[oid] = str(report["state"])
                seen.results[oid] = [str(s["segment_id"]) for s in report["segments"]]
    finally:
        await redis.aclose()
    for oid in object_ids[:CLI_SAMPLE]:
        _check_cli(oid, seen, env)
    return seen


def _check_cli(object_id: str, seen: Observed, env: dict[str, str]) -> None:
    """``capstream results --json`` itself says the same as the function the run reads."""
    proc = subprocess.run(
        [sys.executable, "-m", "workers.cli.main", "results", "--json", object_id],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    shown = [s["segment_id"] for s in json.loads(proc.stdout)["segments"]] if proc.returncode == 0 else None
    if shown != seen.results.get(object_id):
        # What the command does not show is lost to whoever asks it.
        log.error("results_cli_disagrees", object_id=object_id, cli=shown, view=seen.results.get(object_id))
        seen.results[object_id] = list(shown or [])
