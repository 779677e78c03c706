"""The summarize stage's consumer loop, as the stage registry builds it: its own caption-model
backend (the caption stage's model and backend, its own reply budget) on the process's engine
thread."""

from __future__ import annotations

from typing import Any

from workers.caption.backend import make_caption_backend
from workers.runtime.loop import StageLoop
from workers.runtime.resources import WorkerResources
from workers.settings import CaptionSettings, SummarizeSettings
from workers.summarize.stage import SummarizeStage


def build_loops(settings: SummarizeSettings, res: WorkerResources) -> list[StageLoop[Any]]:
    caption = CaptionSettings().model_copy(update={"caption_structured_max_tokens": settings.summarize_max_tokens})
    backend = make_caption_backend(caption, res.engine_executor)
    stage = SummarizeStage(settings, backend)
    return [StageLoop(stage, settings, settings.summarize_group, settings.summarize_max_in_flight, res.metrics)]
