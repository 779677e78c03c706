"""The decode stage's consumer loop, as the stage registry builds it."""

from __future__ import annotations

from typing import Any

from workers.decode.stage import DecodeStage
from workers.runtime.loop import StageLoop
from workers.runtime.resources import WorkerResources
from workers.settings import DecodeSettings


def build_loops(settings: DecodeSettings, res: WorkerResources) -> list[StageLoop[Any]]:
    stage = DecodeStage(settings, res.redis(settings.redis_url))
    return [StageLoop(stage, settings, settings.decode_group, settings.decode_max_in_flight, res.metrics)]
