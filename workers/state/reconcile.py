"""Rebuild Redis from the topics after Redis lost its data (``capstream reconcile``).

Redis holds nothing the topics do not also say: a segment on ``media.segments`` was decoded,
a caption on ``media.captions`` was captioned, an embedding on ``media.embeddings`` was
embedded (and is a row of the result view), a dead letter failed its object. Reconciling
replays that history through the same Lua scripts the workers use (``ProgressStore.mark``,
``set_total``, ``fail``; ``ClaimStore.restore``; ``SequencerStore.advance``;
``ResultStore.put``). Each is idempotent and order-free, so reconciling twice, or while
workers run, counts nothing twice. It writes with ``notify=False``: an object it finds done
or failed was announced (webhooks) when that happened, not again now.

It streams: each batch the reader brings (``read_to_end``, 500 records) becomes one Redis
pipeline of those scripts, and then is dropped. What it keeps is per object and small (ids of
the objects seen, ended and failed), never a vector. The version that first held every
history in memory (embeddings with their vectors) and then made ~3 sequential round trips per
segment peaked at 2,009 MB and ran 2,823 records/s at 100k segments of 384 dimensions; this
one peaks at 100 MB (56 MB of it the interpreter and imports) and runs 8,723 records/s
(``python -m loadtest.reconcile_bench``, docs/benchmarks.md). At 4096 dimensions the old one
would have held ~13 GB of Python floats; this one's memory does not depend on dimensions.

Steps:
1. Each stage's output topic (the stage registry's progress topics: segments, captions,
   embeddings), in pipeline order, then every DLQ, each read to its end. Segment batches are
   read for their identifying fields only (frames skipped), embeddings without their vector.
2. Per record: start its object's progress (once per object), mark the segment done for the
   topic's stage; a decoder's final segment (``reason == "end"``) also sets the total, gives
   the object its claim back (a duplicate event does not decode it again) and advances its
   key's sequencer; an embedding also writes its result row, before its marker, as the embed
   stage does.
3. Dead letters, read last, when every marker is back: a decode letter gives its object its
   claim back; a letter fails its object unless the object is done (the script checks) or a
   model stage's letter names a segment whose done marker is set (another copy finished it),
   the rule of the stages' own hook (``ModelStage.dead_lettered``).

So a finished segment is never redone (its done marker is back before a redelivered record
reaches it) and an object in flight still reaches ``done`` (its counters and total are
back). Not rebuilt: the per-stage event counters (statistics only).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError
from redis.asyncio import Redis

from schemas.dead_letter import DeadLetter
from workers.runtime.kafka import read_to_end
from workers.settings import DecodeSettings
from workers.stages import REGISTRY, StageRegistry
from workers.state.claims import ClaimStore
from workers.state.keys import RedisKeys
from workers.state.progress import ProgressStore, StageCounter
from workers.state.redis_batch import RedisBatch
from workers.state.results import ResultRow, ResultStore
from workers.state.sequencers import SequencerStore

_BATCH = 500
M = TypeVar("M", bound=BaseModel)
# The stages whose dead letters name a segment another copy may have finished, and the done
# marker that says so (``ModelStage.done_marker``).
_FINISHED_BY: dict[str, StageCounter] = {
    "caption": "captioned",
    "transcribe": "transcribed",
    "embed": "embedded",
    "embed-speech": "embedded",
}


class _SegmentSeen(BaseModel):
    """The fields of a segment batch or caption that say which segment it is (frames ignored)."""

    model_config = ConfigDict(extra="ignore")
    object_id: str
    segment_id: str
    segment_index: int
    source_uri: str
    reason: str | None = None
    speech_chunks: int = 0  # on the end segment: speech chunks numbered apart from the segments
    bucket: str | None = None
    key: str | None = None
    version: str | None = None


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
    sequencers: int = 0  # keys whose newest sequencer was missing (or older)
    newly_marked: int = 0  # done markers that were missing
    malformed: int = 0


class Reconciler:
    def __init__(self, settings: DecodeSettings, redis: Redis, registry: StageRegistry = REGISTRY) -> None:
        self.settings = settings
        self.registry = registry
        self.redis = redis
        self.keys = RedisKeys(settings.key_prefix)
        self.progress = ProgressStore.for_worker(redis, settings)
        self.results = ResultStore(redis, self.keys, settings.result_ttl_s)
        self.claims = ClaimStore(redis, self.keys, settings.claim_ttl_s)
        self.sequencers = SequencerStore(redis, self.keys, settings.claim_ttl_s)
        self.counts = ReconcileCounts()
        self._seen: set[str] = set()  # objects on the topics (progress started once each)
        self._ended: set[str] = set()  # objects whose final segment is on the topic
        self._failed: set[str] = set()

    async def run(self) -> ReconcileCounts:
        for _stage, counter, topic in self.registry.progress_topics(self.settings):
            async for values in self._values(topic):
                await self._replay(counter, values)
        async for values in self._values(*self.registry.dlq_topics(self.settings)):
            await self._dead_letters(values)
        self.counts.objects = len(self._seen)
        self.counts.failed = len(self._failed)
        return self.counts

    async def _values(self, *topics: str) -> AsyncIterator[list[bytes]]:
        async for records in read_to_end(self.settings.kafka_bootstrap, list(topics), _BATCH):
            yield [r.value or b"" for r in records]

    async def _replay(self, counter: StageCounter, values: list[bytes]) -> None:
        batch = RedisBatch(self.redis)
        newest: dict[tuple[str, str], str] = {}  # this batch's newest sequencer per key
        for value in values:
            seg = self._parse(ResultRow, value) if counter == "embedded" else self._parse(_SegmentSeen, value)
            if seg is None:
                continue
            await self._start(batch, seg.object_id, seg.source_uri)
            if isinstance(seg, ResultRow):
                self.counts.embeddings += 1
                await self.results.put(seg, batch.pipe)  # before the marker, as the embed stage does
                batch.queued()
            elif counter == "decoded":
                self.counts.segments += 1
                await self._decoded(batch, seg, newest)
            else:
                self.counts.captions += 1
            await self.progress.queue_mark(batch.pipe, counter, seg.object_id, seg.segment_id, notify=False)
            batch.queued("newly_marked")
        for (bucket, key), sequencer in newest.items():
            await self.sequencers.queue_advance(batch.pipe, bucket, key, sequencer)
            batch.queued("sequencers")
        await self._execute(batch)

    async def _start(self, batch: RedisBatch, object_id: str, source_uri: str) -> None:
        if object_id not in self._seen:
            self._seen.add(object_id)
            await self.progress.start(object_id, source_uri, batch.pipe)
            batch.queued()

    async def _decoded(self, batch: RedisBatch, seg: _SegmentSeen, newest: dict[tuple[str, str], str]) -> None:
        if seg.reason == "end":
            self._ended.add(seg.object_id)
            self.counts.totals = len(self._ended)
            total = seg.segment_index + 1 + seg.speech_chunks
            await self.progress.set_total(seg.object_id, total, batch.pipe, notify=False)
            batch.queued()
            self.claims.queue_restore(batch.pipe, seg.object_id)
            batch.queued("claims")
        if seg.bucket and seg.key and seg.version and seg.version.startswith("s:"):
            sequencer = seg.version[2:].upper().lstrip("0") or "0"
            known = newest.get((seg.bucket, seg.key))
            if known is None or (len(sequencer), sequencer) > (len(known), known):
                newest[(seg.bucket, seg.key)] = sequencer

    async def _dead_letters(self, values: list[bytes]) -> None:
        letters = [letter for v in values if (letter := self._parse(DeadLetter, v)) is not None and letter.object_id]
        self.counts.dead_letters += len(letters)
        finished = await self._finished_segments(letters)
        batch = RedisBatch(self.redis)
        for letter in letters:
            assert letter.object_id is not None
            self._seen.add(letter.object_id)  # counted; its progress is the letter's to write
            if letter.stage == "decode":
                self.claims.queue_restore(batch.pipe, letter.object_id)
                batch.queued("claims")
            if letter.segment_id and (letter.stage, letter.segment_id) in finished:
                continue  # another copy of the segment succeeded
            prefix = "" if letter.stage == "decode" else f"{letter.stage} "
            error = f"{prefix}{letter.reason}: {letter.message}"
            await self.progress.queue_fail(batch.pipe, letter.object_id, error, notify=False)
            batch.queued("failed", letter.object_id)
        await self._execute(batch)

    async def _finished_segments(self, letters: list[DeadLetter]) -> set[tuple[str, str]]:
        """(stage, segment) of the model-stage letters whose segment has its done marker."""
        named = [(ltr.stage, ltr.segment_id) for ltr in letters if ltr.segment_id and ltr.stage in _FINISHED_BY]
        if not named:
            return set()
        async with self.redis.pipeline(transaction=False) as pipe:
            for stage, sid in named:
                pipe.exists(self.keys.done(_FINISHED_BY[stage], sid))
            marked = await pipe.execute()
        return {(stage, sid) for (stage, sid), m in zip(named, marked, strict=True) if m}

    async def _execute(self, batch: RedisBatch) -> None:
        tally = await batch.execute()
        self.counts.newly_marked += tally.count("newly_marked")
        self.counts.claims += tally.count("claims")
        self.counts.sequencers += tally.count("sequencers")
        self._failed.update(tally.objects("failed"))

    def _parse(self, model: type[M], value: bytes) -> M | None:
        try:
            return model.model_validate_json(value)
        except ValidationError:
            self.counts.malformed += 1
            return None
