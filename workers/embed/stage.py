"""Embed stage: caption -> embedding record on the embeddings topic -> result view."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from redis.asyncio import Redis

from schemas.captions import Caption
from schemas.dead_letter import DeadLetter
from schemas.embeddings import Embedding
from schemas.ids import embedding_id
from workers.embed.backend import EmbedBackend
from workers.runtime.stage import ModelStage, Output, RecordContext
from workers.settings import EmbedSettings
from workers.state import ProgressStore, RedisKeys, ResultStore


class EmbedStage(ModelStage[Caption]):
    name = "embed"
    input_model = Caption
    done_marker = "embedded"
    backend: EmbedBackend
    progress: ProgressStore

    def __init__(self, settings: EmbedSettings, redis: Redis, backend: EmbedBackend) -> None:
        self.settings = settings
        self.input_topic = settings.topic_captions
        self.output_topics = (settings.topic_embeddings,)
        keys = RedisKeys(settings.key_prefix)
        self.progress = ProgressStore(redis, keys, failed_ttl_s=settings.failed_progress_ttl_s)
        self.results = ResultStore(redis, keys)
        self.backend = backend
        self._embedded: dict[str, Embedding] = {}

    async def process(self, item: Caption, ctx: RecordContext) -> AsyncGenerator[Output, None]:
        log = ctx.log.bind(object_id=item.object_id, segment_id=item.segment_id)
        if await self.progress.is_marked("embedded", item.segment_id):
            log.info("segment_already_embedded")
            return
        vector = await self.backend.embed(item.text)
        embedding = Embedding(
            embedding_id=embedding_id(item.segment_id, self.backend.model),
            object_id=item.object_id,
            segment_id=item.segment_id,
            segment_index=item.segment_index,
            source_uri=item.source_uri,
            start_s=item.start_s,
            end_s=item.end_s,
            caption=item.text,
            caption_model=item.model,
            model=self.backend.model,
            dim=len(vector),
            vector=vector,
        )
        self._embedded[ctx.owner] = embedding
        log.info("segment_embedded", dim=embedding.dim)
        yield Output(self.settings.topic_embeddings, item.object_id, embedding)

    async def delivered(self, item: Caption, ctx: RecordContext) -> None:
        embedding = self._embedded.get(ctx.owner)
        if embedding is not None:
            # Result row before the counter, so an object is never 'done' with a missing row.
            await self.results.put(embedding)
        await self.progress.mark("embedded", item.object_id, item.segment_id)
        self._embedded.pop(ctx.owner, None)  # only now: a Redis outage above retries this hook

    async def dead_lettered(self, item: Caption | None, letter: DeadLetter, ctx: RecordContext) -> None:
        self._embedded.pop(ctx.owner, None)
        await super().dead_lettered(item, letter, ctx)
