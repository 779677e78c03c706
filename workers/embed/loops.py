"""The embed stage's consumer loops, as the stage registry builds them: captions and
transcripts, one embed backend (one engine) for both."""

from __future__ import annotations

from typing import Any

from workers.embed.backend import make_embed_backend
from workers.embed.stage import EmbedStage, TranscriptEmbedStage
from workers.runtime.loop import StageLoop
from workers.runtime.resources import WorkerResources
from workers.runtime.shared_backend import shared_backend
from workers.settings import EmbedSettings


def build_loops(settings: EmbedSettings, res: WorkerResources) -> list[StageLoop[Any]]:
    batch_sizes = res.metrics.for_stage(EmbedStage.name).engine_batch.observe
    backend = shared_backend(make_embed_backend(settings, res.engine_executor, batch_sizes), users=2)
    redis = res.redis(settings.redis_url)
    captions = EmbedStage(settings, redis, backend)
    transcripts = TranscriptEmbedStage(settings, redis, backend)
    return [
        StageLoop(captions, settings, settings.embed_group, settings.embed_max_in_flight, res.metrics),
        StageLoop(transcripts, settings, settings.embed_speech_group, settings.embed_max_in_flight, res.metrics),
    ]
