"""The embed stage's consumer loop, as the stage registry builds it."""

from __future__ import annotations

from typing import Any

from workers.embed.backend import make_embed_backend
from workers.embed.stage import EmbedStage
from workers.runtime.loop import StageLoop
from workers.runtime.resources import WorkerResources
from workers.settings import EmbedSettings


def build_loops(settings: EmbedSettings, res: WorkerResources) -> list[StageLoop[Any]]:
    batch_sizes = res.metrics.for_stage(EmbedStage.name).engine_batch.observe
    backend = make_embed_backend(settings, res.engine_executor, batch_sizes)
    stage = EmbedStage(settings, res.redis(settings.redis_url), backend)
    return [StageLoop(stage, settings, settings.embed_group, settings.embed_max_in_flight, res.metrics)]
