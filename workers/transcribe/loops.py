"""The transcribe stage's consumer loop, as the stage registry builds it."""

from __future__ import annotations

from typing import Any

from workers.runtime.loop import StageLoop
from workers.runtime.resources import WorkerResources
from workers.settings import TranscribeSettings
from workers.transcribe.backend import make_transcribe_backend
from workers.transcribe.stage import TranscribeStage


def build_loops(settings: TranscribeSettings, res: WorkerResources) -> list[StageLoop[Any]]:
    batch_sizes = res.metrics.for_stage(TranscribeStage.name).engine_batch.observe
    backend = make_transcribe_backend(settings, res.engine_executor, batch_sizes)
    stage = TranscribeStage(settings, res.redis(settings.redis_url), backend)
    return [StageLoop(stage, settings, settings.transcribe_group, settings.transcribe_max_in_flight, res.metrics)]
