"""Embed stage: caption -> embedding record on the embeddings topic -> result view."""

from __future__ import annotations

from redis.asyncio import Redis
from structlog.typing import FilteringBoundLogger

from schemas.captions import Caption
from schemas.dead_letter import DeadLetter
from schemas.embeddings import Embedding
from schemas.ids import embedding_id
from workers.embed.backend import EmbedBackend
from workers.runtime.stage import ModelStage, RecordContext
from workers.settings import EmbedSettings
from workers.state import ProgressStore, RedisKeys, ResultStore
from workers.state.results import ResultRow


class EmbedStage(ModelStage[Caption, EmbedBackend]):
    name = "embed"
    input_model = Caption
    done_marker = "embedded"

    def __init__(self, settings: EmbedSettings, redis: Redis, backend: EmbedBackend) -> None:
        keys = RedisKeys(settings.key_prefix)
        progress = ProgressStore(redis, keys, failed_ttl_s=settings.failed_progress_ttl_s)
        super().__init__(settings.topic_captions, settings.topic_embeddings, progress, backend)
        self.settings = settings
        self.results = ResultStore(redis, keys, settings.result_ttl_s)
        self._rows: dict[str, ResultRow] = {}  # the result view's row until delivered, no vector

    async def run_model(self, item: Caption, ctx: RecordContext, log: FilteringBoundLogger) -> Embedding:
        vector = await self.backend.embed(item.text)
        embedding = Embedding(
            **item.segment_ref(),
            embedding_id=embedding_id(item.segment_id, self.backend.model),
            caption=item.text,
            caption_model=item.model,
            model=self.backend.model,
            dim=len(vector),
            vector=vector,
        )
        self._rows[ctx.owner] = ResultRow.of(embedding)
        log.info("segment_embedded", dim=embedding.dim)
        return embedding

    async def delivered(self, item: Caption, ctx: RecordContext) -> None:
        row = self._rows.get(ctx.owner)
        if row is not None:
            # Result row before the counter, so an object is never 'done' with a missing row.
            await self.results.put(row)
        await super().delivered(item, ctx)  # the done marker
        self._rows.pop(ctx.owner, None)  # only now: a Redis outage above retries this hook

    async def dead_lettered(self, item: Caption | None, letter: DeadLetter, ctx: RecordContext) -> None:
        self._rows.pop(ctx.owner, None)
        await super().dead_lettered(item, letter, ctx)
