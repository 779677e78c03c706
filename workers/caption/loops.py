"""The caption stage's consumer loop, as the stage registry builds it."""

from __future__ import annotations

from typing import Any

from workers.caption.backend import make_caption_backend
from workers.caption.stage import CaptionStage
from workers.runtime.loop import StageLoop
from workers.runtime.resources import WorkerResources
from workers.settings import CaptionSettings


def build_loops(settings: CaptionSettings, res: WorkerResources) -> list[StageLoop[Any]]:
    batch_sizes = res.metrics.for_stage(CaptionStage.name).engine_batch.observe
    backend = make_caption_backend(settings, res.engine_executor, batch_sizes)
    stage = CaptionStage(settings, res.redis(settings.redis_url), backend)
    return [StageLoop(stage, settings, settings.caption_group, settings.caption_max_in_flight, res.metrics)]
