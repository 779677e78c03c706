"""Assemble stages into running consumer loops: one stage per process (scale-out) or all
three in one process (laptop mode)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Sequence
from typing import Any, Literal

import structlog
from redis.asyncio import Redis

from workers.caption.backend import make_caption_backend
from workers.caption.stage import CaptionStage
from workers.decode.stage import DecodeStage
from workers.embed.backend import make_embed_backend
from workers.embed.stage import EmbedStage
from workers.runtime.kafka import ensure_topics
from workers.runtime.loop import StageLoop
from workers.settings import CaptionSettings, CommonSettings, DecodeSettings, EmbedSettings

StageName = Literal["decode", "caption", "embed"]
STAGES: tuple[StageName, ...] = ("decode", "caption", "embed")

log = structlog.get_logger("capstream.app")


def build_loop(name: StageName, redis_clients: list[Redis]) -> StageLoop[Any]:
    if name == "decode":
        ds = DecodeSettings()
        redis = Redis.from_url(ds.redis_url)
        redis_clients.append(redis)
        return StageLoop(DecodeStage(ds, redis), ds, ds.decode_group, ds.decode_max_in_flight)
    if name == "caption":
        cs = CaptionSettings()
        redis = Redis.from_url(cs.redis_url)
        redis_clients.append(redis)
        return StageLoop(
            CaptionStage(cs, redis, make_caption_backend(cs)), cs, cs.caption_group, cs.caption_max_in_flight
        )
    es = EmbedSettings()
    redis = Redis.from_url(es.redis_url)
    redis_clients.append(redis)
    return StageLoop(EmbedStage(es, redis, make_embed_backend(es)), es, es.embed_group, es.embed_max_in_flight)


async def run_stages(names: Sequence[StageName], stop: asyncio.Event | None = None) -> None:
    """Run the named stages until SIGTERM/SIGINT (or ``stop``), then drain and commit."""
    common = CommonSettings()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await ensure_topics(common)
    redis_clients: list[Redis] = []
    loops = [build_loop(n, redis_clients) for n in names]
    tasks = [asyncio.create_task(sl.run(stop), name=f"stage-{n}") for n, sl in zip(names, loops, strict=True)]
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
        for redis in redis_clients:
            await redis.aclose()
