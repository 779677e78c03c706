"""Assemble stages into running consumer loops: one stage per process (scale-out) or all
of them in one process (laptop mode). Which stages exist, and how each is built, is the
stage registry's (``workers.stages``)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Sequence

import structlog

from workers.runtime.resources import WorkerResources
from workers.settings import CommonSettings
from workers.stages import REGISTRY, StageRegistry, ensure_pipeline_topics

log = structlog.get_logger("capstream.app")


async def run_stages(
    names: Sequence[str], stop: asyncio.Event | None = None, registry: StageRegistry = REGISTRY
) -> None:
    """Run the named stages until SIGTERM/SIGINT (or ``stop``), then drain and commit."""
    common = CommonSettings()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await ensure_pipeline_topics(common, registry)
    resources = WorkerResources()
    if common.metrics_port is not None:
        resources.metrics.serve(common.metrics_port, common.metrics_host)
    specs = [registry[n] for n in names]
    loops = [sl for spec in specs for sl in spec.build_loops(spec.load_settings(), resources)]
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
