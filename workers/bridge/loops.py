"""The s3-events stage's consumer loop, as the stage registry builds it."""

from __future__ import annotations

from typing import Any

from workers.bridge.stage import S3EventsStage
from workers.runtime.loop import StageLoop
from workers.runtime.resources import WorkerResources
from workers.settings import BridgeSettings


def build_loops(settings: BridgeSettings, res: WorkerResources) -> list[StageLoop[Any]]:
    stage = S3EventsStage(settings, res.redis(settings.redis_url))
    return [StageLoop(stage, settings, settings.s3_events_group, settings.s3_events_max_in_flight, res.metrics)]
