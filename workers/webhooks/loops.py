"""The webhooks stage's consumer loop, as the stage registry builds it."""

from __future__ import annotations

from typing import Any

from workers.runtime.loop import StageLoop
from workers.runtime.resources import WorkerResources
from workers.settings import WebhookSettings
from workers.webhooks.stage import WebhookStage


def build_loops(settings: WebhookSettings, res: WorkerResources) -> list[StageLoop[Any]]:
    stage = WebhookStage(settings, res.redis(settings.redis_url))
    return [StageLoop(stage, settings, settings.webhooks_group, settings.webhook_max_in_flight, res.metrics)]
