"""Rebuild Redis from the topics after Redis lost its data (``capstream reconcile``).

Redis holds nothing the topics do not also say: a segment on ``media.segments`` was decoded,
a caption on ``media.captions`` was captioned, an embedding on ``media.embeddings`` was
embedded (and is a row of the result view), a dead letter failed its object. Reconciling
replays that history through the same Lua scripts the workers use (``ProgressStore.mark``,
``set_total``, ``fail``; ``ClaimStore.restore``; ``SequencerStore.advance``). Each is
idempotent and order-free, so reconciling twice, or while workers run, counts nothing twice.

Steps:
1. Read each stage's output topic (the stage registry's progress topics: segments, captions,
   embeddings) and every DLQ to its end (``read_to_end``). Segment batches are read for their
   identifying fields only; their frames are skipped.
2. Per object: start its progress, mark every segment decoded, set the total once the
   decoder's final segment (``reason == "end"``) is on the topic, mark captioned and embedded
   segments, restore the result view; objects whose decode finished or was dead-lettered get
   their claim back, so a duplicate event does not decode them again; keys get their newest
   sequencer back.
3. Dead letters fail their object, unless the object is done or (model stages) the segment
   they name was finished by another copy, the same rule as the stages' own hook.

So a finished segment is never redone (its done marker is back before a redelivered record
reaches it) and an object in flight still reaches ``done`` (its counters and total are
back). Not rebuilt: the per-stage event counters (statistics only).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError
from redis.asyncio import Redis

from schemas.dead_letter import DeadLetter
from schemas.embeddings import Embedding
from workers.runtime.kafka import read_to_end
from workers.settings import DecodeSettings
from workers.stages import REGISTRY, StageRegistry
from workers.state.claims import ClaimStore
from workers.state.keys import RedisKeys
from workers.state.progress import ProgressStore, StageCounter
from workers.state.results import ResultStore
from workers.state.sequencers import SequencerStore

_BATCH = 500
M = TypeVar("M", bound=BaseModel)


class _SegmentSeen(BaseModel):
    """The fields of a segment batch or caption that say which segment it is (frames ignored)."""

    model_config = ConfigDict(extra="ignore")
    object_id: str
    segment_id: str
    segment_index: int
    source_uri: str
    reason: str | None = None
    bucket: str | None = None
    key: str | None = None
    version: str | None = None


@dataclass
class _ObjectHistory:
    source_uri: str = ""
    decoded: set[str] = field(default_factory=set)
    captioned: set[str] = field(default_factory=set)
    embedded: dict[str, Embedding] = field(default_factory=dict)
    total: int | None = None
    letters: list[DeadLetter] = field(default_factory=list)


@dataclass
class ReconcileCounts:
    objects: int = 0
    segments: int = 0
    captions: int = 0
    embeddings: int = 0
    totals: int = 0  # objects whose decode had finished
    dead_letters: int = 0
    failed: int = 0  # objects a dead letter marked failed
    claims: int = 0
    sequencers: int = 0
    newly_marked: int = 0  # done markers that were missing
    malformed: int = 0


class Reconciler:
    def __init__(self, settings: DecodeSettings, redis: Redis, registry: StageRegistry = REGISTRY) -> None:
        self.settings = settings
        self.registry = registry
        keys = RedisKeys(settings.key_prefix)
        self.progress = ProgressStore(redis, keys, failed_ttl_s=settings.failed_progress_ttl_s)
        self.results = ResultStore(redis, keys)
        self.claims = ClaimStore(redis, keys, settings.claim_ttl_s)
        self.sequencers = SequencerStore(redis, keys, settings.claim_ttl_s)
        self.counts = ReconcileCounts()
        self._objects: dict[str, _ObjectHistory] = defaultdict(_ObjectHistory)
        self._versions: dict[tuple[str, str], str] = {}  # (bucket, key) -> newest S3 sequencer seen

    async def run(self) -> ReconcileCounts:
        await self._read_history()
        for object_id, history in self._objects.items():
            await self._restore(object_id, history)
        for (bucket, key), sequencer in self._versions.items():
            await self.sequencers.advance(bucket, key, sequencer)
            self.counts.sequencers += 1
        self.counts.objects = len(self._objects)
        return self.counts

    async def _read_history(self) -> None:
        readers = {"decoded": self._read_segment, "captioned": self._read_caption, "embedded": self._read_embedding}
        for _stage, counter, topic in self.registry.progress_topics(self.settings):
            async for values in self._values(topic):
                for value in values:
                    readers[counter](value)
        async for values in self._values(*self.registry.dlq_topics(self.settings)):
            for value in values:
                letter = self._parse(DeadLetter, value)
                if letter is not None and letter.object_id:
                    self._objects[letter.object_id].letters.append(letter)
                    self.counts.dead_letters += 1

    async def _values(self, *topics: str) -> AsyncIterator[list[bytes]]:
        async for records in read_to_end(self.settings.kafka_bootstrap, list(topics), _BATCH):
            yield [r.value or b"" for r in records]

    def _read_segment(self, value: bytes) -> None:
        if (seg := self._parse(_SegmentSeen, value)) is not None:
            self._segment(seg)

    def _read_caption(self, value: bytes) -> None:
        if (cap := self._parse(_SegmentSeen, value)) is not None:
            self._objects[cap.object_id].captioned.add(cap.segment_id)
            self.counts.captions += 1

    def _read_embedding(self, value: bytes) -> None:
        if (emb := self._parse(Embedding, value)) is not None:
            self._objects[emb.object_id].embedded[emb.segment_id] = emb
            self.counts.embeddings += 1

    def _segment(self, seg: _SegmentSeen) -> None:
        history = self._objects[seg.object_id]
        history.source_uri = seg.source_uri
        history.decoded.add(seg.segment_id)
        self.counts.segments += 1
        if seg.reason == "end":
            history.total = seg.segment_index + 1
        if seg.bucket and seg.key and seg.version and seg.version.startswith("s:"):
            sequencer = seg.version[2:].upper().lstrip("0") or "0"
            known = self._versions.get((seg.bucket, seg.key))
            if known is None or (len(sequencer), sequencer) > (len(known), known):
                self._versions[(seg.bucket, seg.key)] = sequencer

    def _parse(self, model: type[M], value: bytes) -> M | None:
        try:
            return model.model_validate_json(value)
        except ValidationError:
            self.counts.malformed += 1
            return None

    async def _restore(self, object_id: str, h: _ObjectHistory) -> None:
        decode_failed = any(letter.stage == "decode" for letter in h.letters)
        if h.source_uri:
            await self.progress.start(object_id, h.source_uri)
        await self._mark("decoded", object_id, h.decoded)
        if h.total is not None:
            await self.progress.set_total(object_id, h.total)
            self.counts.totals += 1
        await self._mark("captioned", object_id, h.captioned)
        for embedding in h.embedded.values():
            await self.results.put(embedding)  # before the marker, as the embed stage does
        await self._mark("embedded", object_id, set(h.embedded))
        if (h.total is not None or decode_failed) and await self.claims.restore(object_id):
            self.counts.claims += 1
        finished = {"caption": h.captioned, "embed": set(h.embedded)}
        failed = False
        for letter in h.letters:
            if letter.segment_id and letter.segment_id in finished.get(letter.stage, set()):
                continue  # another copy of the segment succeeded
            prefix = "" if letter.stage == "decode" else f"{letter.stage} "
            failed |= await self.progress.fail(object_id, f"{prefix}{letter.reason}: {letter.message}")
        self.counts.failed += failed

    async def _mark(self, stage: StageCounter, object_id: str, segment_ids: set[str]) -> None:
        for sid in sorted(segment_ids):
            if await self.progress.mark(stage, object_id, sid):
                self.counts.newly_marked += 1
