"""Assemble stages into running consumer loops: one stage per process (scale-out) or all
of them in one process (laptop mode)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog
from redis.asyncio import Redis

from workers.bridge.stage import S3EventsStage
from workers.caption.backend import make_caption_backend
from workers.caption.stage import CaptionStage
from workers.decode.stage import DecodeStage
from workers.embed.backend import make_embed_backend
from workers.embed.stage import EmbedStage
from workers.index.stage import IndexParts, IndexStage, RemovalStage
from workers.runtime.continuous import engine_thread
from workers.runtime.kafka import ensure_topics
from workers.runtime.loop import StageLoop
from workers.runtime.metrics import WorkerMetrics
from workers.settings import (
    BridgeSettings,
    CaptionSettings,
    CommonSettings,
    DecodeSettings,
    EmbedSettings,
    IndexSettings,
)

StageName = Literal["s3-events", "decode", "caption", "embed", "index"]
STAGES: tuple[StageName, ...] = ("decode", "caption", "embed", "index")

log = structlog.get_logger("capstream.app")


@dataclass
class WorkerResources:
    """What the stages of one worker process share, released when the process stops.

    One engine thread for every in-process vLLM engine: vLLM's forward context and parallel
    groups are process-global, so two engines must never run at the same time.
    """

    engine_executor: ThreadPoolExecutor = field(default_factory=engine_thread)
    redis_clients: list[Redis] = field(default_factory=list)
    metrics: WorkerMetrics = field(default_factory=WorkerMetrics)

    def redis(self, url: str) -> Redis:
        client = Redis.from_url(url)
        self.redis_clients.append(client)
        return client

    async def close(self) -> None:
        for client in self.redis_clients:
            await client.aclose()
        self.engine_executor.shutdown(wait=False, cancel_futures=True)


def laptop_stages() -> tuple[StageName, ...]:
    """What `capstream run` runs: the four stages, plus the event bridge when the store
    publishes filer events (the local stack turns that on)."""
    return ("s3-events", *STAGES) if BridgeSettings().s3_events_bridge else STAGES


def build_loops(name: StageName, res: WorkerResources) -> list[StageLoop[Any]]:
    """The consumer loops of one stage: one, except the index stage, which also consumes the
    removals topic (two groups, one shared writer thread)."""
    if name == "index":
        ix = IndexSettings()
        parts = IndexParts(ix)
        return [
            StageLoop(IndexStage(ix, parts), ix, ix.index_group, ix.index_max_in_flight, res.metrics),
            StageLoop(RemovalStage(ix, parts), ix, ix.index_removals_group, 16, res.metrics),
        ]
    return [build_loop(name, res)]


def build_loop(name: StageName, res: WorkerResources) -> StageLoop[Any]:
    if name == "s3-events":
        bs = BridgeSettings()
        stage_b = S3EventsStage(bs, res.redis(bs.redis_url))
        return StageLoop(stage_b, bs, bs.s3_events_group, bs.s3_events_max_in_flight, res.metrics)
    if name == "decode":
        ds = DecodeSettings()
        return StageLoop(
            DecodeStage(ds, res.redis(ds.redis_url)), ds, ds.decode_group, ds.decode_max_in_flight, res.metrics
        )
    if name == "caption":
        cs = CaptionSettings()
        backend = make_caption_backend(cs, res.engine_executor, res.metrics.for_stage("caption").engine_batch.observe)
        return StageLoop(
            CaptionStage(cs, res.redis(cs.redis_url), backend),
            cs,
            cs.caption_group,
            cs.caption_max_in_flight,
            res.metrics,
        )
    es = EmbedSettings()
    backend_e = make_embed_backend(es, res.engine_executor, res.metrics.for_stage("embed").engine_batch.observe)
    stage_e = EmbedStage(es, res.redis(es.redis_url), backend_e)
    return StageLoop(stage_e, es, es.embed_group, es.embed_max_in_flight, res.metrics)


async def run_stages(names: Sequence[StageName], stop: asyncio.Event | None = None) -> None:
    """Run the named stages until SIGTERM/SIGINT (or ``stop``), then drain and commit."""
    common = CommonSettings()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await ensure_topics(common)
    resources = WorkerResources()
    if common.metrics_port is not None:
        resources.metrics.serve(common.metrics_port, common.metrics_host)
    loops = [sl for n in names for sl in build_loops(n, resources)]
    tasks = [asyncio.create_task(sl.run(stop), name=f"stage-{sl.stage.name}") for sl in loops]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            if task.exception() is not None:
                log.error("stage_crashed", stage=task.get_name(), error=repr(task.exception()))
                stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        for task in tasks:
            if task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        await resources.close()
