"""Embed stage: a caption or a transcript -> embedding record on the embeddings topic -> result view.

Two consumer loops share one embed backend: captions (``media.captions``) and transcripts of
speech chunks (``media.transcripts``), each its own consumer group, so a backlog of one never
waits behind the other. Both write the same rows; ``modality`` tells them apart (a document
page's caption is ``page``).
"""

from __future__ import annotations

from typing import Generic, NamedTuple, TypeVar

from redis.asyncio import Redis
from structlog.typing import FilteringBoundLogger

from schemas.base import SegmentRef
from schemas.captions import Caption
from schemas.dead_letter import DeadLetter
from schemas.embeddings import Embedding, Modality
from schemas.ids import embedding_id
from schemas.speech import Transcript
from workers.embed.backend import EmbedBackend
from workers.runtime.stage import ModelStage, RecordContext
from workers.settings import EmbedSettings
from workers.state import ProgressStore, RedisKeys, ResultStore
from workers.state.results import ResultRow

T = TypeVar("T", bound=SegmentRef)


class Described(NamedTuple):
    text: str  # what is embedded
    modality: Modality
    language: str | None
    model: str  # what wrote the text


class _EmbedText(ModelStage[T, EmbedBackend], Generic[T]):
    done_marker = "embedded"

    def __init__(self, settings: EmbedSettings, redis: Redis, backend: EmbedBackend, input_topic: str) -> None:
        keys = RedisKeys(settings.key_prefix)
        progress = ProgressStore.for_worker(redis, settings)
        super().__init__(input_topic, settings.topic_embeddings, progress, backend)
        self.settings = settings
        self.results = ResultStore(redis, keys, settings.result_ttl_s)
        self._rows: dict[str, ResultRow] = {}  # the result view's row until delivered, no vector

    def described(self, item: T) -> Described:
        raise NotImplementedError

    async def run_model(self, item: T, ctx: RecordContext, log: FilteringBoundLogger) -> Embedding:
        text, modality, language, text_model = self.described(item)
        vector = await self.backend.embed(text)
        embedding = Embedding(
            **item.segment_ref(),
            embedding_id=embedding_id(item.segment_id, self.backend.model),
            caption=text,
            caption_model=text_model,
            modality=modality,
            language=language,
            model=self.backend.model,
            dim=len(vector),
            vector=vector,
        )
        self._rows[ctx.owner] = ResultRow.of(embedding)
        log.info("segment_embedded", dim=embedding.dim, modality=modality)
        return embedding

    async def delivered(self, item: T, ctx: RecordContext) -> None:
        row = self._rows.get(ctx.owner)
        if row is not None:
            # Result row before the counter, so an object is never 'done' with a missing row.
            await self.results.put(row)
        await super().delivered(item, ctx)  # the done marker
        self._rows.pop(ctx.owner, None)  # only now: a Redis outage above retries this hook

    async def dead_lettered(self, item: T | None, letter: DeadLetter, ctx: RecordContext) -> None:
        self._rows.pop(ctx.owner, None)
        await super().dead_lettered(item, letter, ctx)


class EmbedStage(_EmbedText[Caption]):
    name = "embed"
    input_model = Caption

    def __init__(self, settings: EmbedSettings, redis: Redis, backend: EmbedBackend) -> None:
        super().__init__(settings, redis, backend, settings.topic_captions)

    def described(self, item: Caption) -> Described:
        return Described(item.text, "page" if item.page_number is not None else "visual", None, item.model)


class TranscriptEmbedStage(_EmbedText[Transcript]):
    """Transcripts, embedded as they are: a chunk where the recognizer heard no words still
    gets its (empty) row, so the object's count of embedded moments reaches its total; search
    never ranks a row without words above one with them (no BM25 match, a far vector)."""

    name = "embed-speech"
    input_model = Transcript

    def __init__(self, settings: EmbedSettings, redis: Redis, backend: EmbedBackend) -> None:
        super().__init__(settings, redis, backend, settings.topic_transcripts)

    def described(self, item: Transcript) -> Described:
        return Described(item.text, "speech", item.language, item.model)
