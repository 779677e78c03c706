"""Decode stage: object-created event -> claimed object -> PyAV segments -> segment batches,
and, from the same read, the audio track's speech chunks (speech.py) for the transcribe stage.

An object's progress total counts both: its visual segments and its speech chunks each get one
embedding. The decoder yields every speech chunk before the last visual segment, which carries
how many there were (``SegmentBatch.speech_chunks``), so ``capstream reconcile`` rebuilds the
same total from the segments topic alone."""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

from redis.asyncio import Redis

from schemas.base import THUMBNAIL_MAX_BYTES
from schemas.dead_letter import DeadLetter
from schemas.events import EventBatch, EventParseError, ObjectCreated, ObjectRemoved, parse_event
from schemas.ids import segment_id, speech_segment_id
from schemas.progress import ObjectState
from schemas.segments import Frame, SegmentBatch
from schemas.speech import SpeechChunk
from workers.decode.container import redact
from workers.decode.dispatch import decode_segments
from workers.decode.documents import DecodedPage
from workers.decode.errors import MediaError
from workers.decode.filters import EventFilter
from workers.decode.policy import SegmentPolicy, SpeechPolicy
from workers.decode.sampling import DecodedSegment
from workers.decode.source import ObjectSource
from workers.decode.speech import DecodedSpeech
from workers.decode.threaded import iterate_in_thread
from workers.runtime.dead_letters import dead_letter_for
from workers.runtime.errors import PermanentError
from workers.runtime.metrics import Outcome
from workers.runtime.stage import Output, RecordContext, Stage
from workers.settings import DecodeSettings
from workers.state import (
    ClaimOutcome,
    ClaimStore,
    EventCounts,
    ProgressStore,
    RedisKeys,
    SequencerOutcome,
    SequencerStore,
)

# JSON carries frames as base64 (4/3 larger) plus a few hundred bytes of fields per frame,
# and the thumbnail (base64 of at most THUMBNAIL_MAX_BYTES).
_ENVELOPE_BYTES = 16 * 1024 + THUMBNAIL_MAX_BYTES * 4 // 3


def segment_policy(settings: DecodeSettings) -> SegmentPolicy:
    return SegmentPolicy(
        mode=settings.segment_policy,
        max_segment_s=settings.max_segment_s,
        min_scene_s=settings.min_scene_s,
        scene_threshold=settings.scene_threshold,
        sample_fps=settings.sample_fps,
        min_frames=settings.min_frames,
        max_frames=settings.max_frames,
        max_pixels=settings.max_pixels,
        jpeg_quality=settings.jpeg_quality,
        max_segment_bytes=(settings.max_message_bytes - _ENVELOPE_BYTES) * 3 // 4,
        max_duration_s=settings.max_duration_s,
        max_source_pixels=settings.max_source_pixels,
        max_decode_s=settings.max_decode_s,
        max_decode_pixel_rate=settings.max_decode_pixel_rate,
        max_pixels_per_byte=settings.max_pixels_per_byte,
        page_max_pixels=settings.page_max_pixels,
        max_pages=settings.max_pages,
        visual_token_budget=settings.segment_visual_tokens,
        speech=SpeechPolicy(
            vad_threshold=settings.speech_vad_threshold,
            min_silence_s=settings.speech_min_silence_s,
            max_chunk_s=settings.speech_max_chunk_s,
            max_chunk_bytes=(settings.max_message_bytes - _ENVELOPE_BYTES) * 3 // 4,
        )
        if settings.speech
        else None,
    )


@dataclass
class _RecordOutcome:
    """What one event record produced, applied to progress once outputs are acknowledged."""

    decoded: dict[str, list[str]] = field(default_factory=dict)  # object_id -> segment ids
    failed: dict[str, str] = field(default_factory=dict)  # object_id -> error
    claimed: list[str] = field(default_factory=list)  # objects this record owns (acquired or reclaimed)


class DecodeStage(Stage[EventBatch]):
    name = "decode"

    def __init__(self, settings: DecodeSettings, redis: Redis) -> None:
        self.settings = settings
        self.input_topic = settings.topic_objects
        self.output_topics = (settings.topic_segments, settings.topic_removals, settings.topic_speech)
        keys = RedisKeys(settings.key_prefix)
        self.claims = ClaimStore(redis, keys, settings.claim_ttl_s)
        self.sequencers = SequencerStore(redis, keys, settings.claim_ttl_s)
        self.counts = EventCounts(redis, keys, self.name)
        self.filter = EventFilter.from_settings(settings)
        self.progress = ProgressStore.for_worker(redis, settings)
        self.source = ObjectSource(settings)
        self.policy = segment_policy(settings)
        self._executor = ThreadPoolExecutor(
            max_workers=settings.decode_threads or os.cpu_count() or 2, thread_name_prefix="decode"
        )
        self._outcomes: dict[str, _RecordOutcome] = {}

    async def setup(self) -> None:
        await self.source.start()

    async def close(self) -> None:
        await self.source.close()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def parse(self, value: bytes) -> EventBatch:
        try:
            return parse_event(value)
        except EventParseError as exc:
            raise PermanentError(exc.reason, str(exc)) from exc

    async def process(self, item: EventBatch, ctx: RecordContext) -> AsyncGenerator[Output, None]:
        outcome = self._outcomes[ctx.owner] = _RecordOutcome()  # a retry starts over
        skipped: list[Outcome] = []  # why objects were passed over, for the record's verdict
        event_time_fallback = ctx.record_time  # when the event reached Kafka, if it has no time
        for name in item.ignored:
            ctx.log.info("event_ignored", event_name=name)
            await self.counts.add(f"ignored:{name}")
        for removed in item.removed:
            if (output := await self._removal(removed, ctx)) is not None:
                yield output
        for obj in item.objects:
            log = ctx.log.bind(object_id=obj.object_id, uri=obj.uri)
            too_large = self.filter.too_large(obj)
            if (rejected_by := self.filter.rejects(obj)) is not None:
                log.info("event_filtered", filter=rejected_by, size=obj.size, content_type=obj.content_type)
                await self.counts.add(f"filtered:{rejected_by}")
                # Whoever uploaded it sees why nothing happens (`submit --wait`, `status`).
                await self.progress.skip(obj.object_id, obj.uri, self.filter.explain(rejected_by))
                skipped.append(Outcome.FILTERED)
                continue
            if obj.bucket and obj.key and obj.sequencer:
                order = await self.sequencers.advance(obj.bucket, obj.key, obj.sequencer)
                if order is SequencerOutcome.STALE:
                    log.info("stale_event_skipped", sequencer=obj.sequencer)
                    await self.counts.add("stale")
                    skipped.append(Outcome.STALE)
                    continue
            claim = await self.claims.claim(obj.object_id, ctx.owner)
            if claim is ClaimOutcome.DUPLICATE:
                log.info("duplicate_event_skipped")
                await self.counts.add("duplicate")
                skipped.append(Outcome.DUPLICATE)
                continue
            if claim is ClaimOutcome.RECLAIMED and await self._already_failed(obj.object_id):
                # Redelivered after its dead letter was written: one dead letter per object.
                log.info("already_dead_lettered_skipped")
                skipped.append(Outcome.DUPLICATE)
                continue
            outcome.claimed.append(obj.object_id)
            await self.counts.add("accepted")
            await self.progress.start(obj.object_id, obj.uri)
            log.info("decode_started", claim=claim.value, size=obj.size)
            ids: list[str] = []
            chunks = 0
            try:
                if too_large is not None:
                    # Oversized input is bad input (DLQ + failed), decided after the claim so a
                    # repeated event does not write a second dead letter.
                    raise PermanentError("object_too_large", too_large, object_id=obj.object_id)
                async for segment in self._segments(obj, ctx.metrics.source_bytes.inc):
                    if isinstance(segment, DecodedSpeech):
                        chunk = _to_chunk(obj, segment, obj.event_time or event_time_fallback)
                        ids.append(chunk.segment_id)
                        chunks += 1
                        yield Output(self.settings.topic_speech, obj.object_id, chunk)
                        log.debug(
                            "speech_chunk_published",
                            segment_id=chunk.segment_id,
                            start_s=chunk.start_s,
                            end_s=chunk.end_s,
                            flac_bytes=len(chunk.flac),
                        )
                        continue
                    batch = _to_batch(obj, segment, obj.event_time or event_time_fallback, chunks)
                    ids.append(batch.segment_id)
                    ctx.metrics.video_seconds.inc(batch.end_s - batch.start_s)
                    yield Output(self.settings.topic_segments, obj.object_id, batch)
                    log.debug(
                        "segment_published",
                        segment_id=batch.segment_id,
                        start_s=batch.start_s,
                        end_s=batch.end_s,
                        frames=len(batch.frames),
                    )
            except PermanentError as exc:
                outcome.failed[obj.object_id] = f"{exc.reason}: {exc}"
                log.warning("object_rejected", reason=exc.reason, error=str(exc))
                yield dead_letter_for(self.name, ctx, exc, "permanent", object_id=obj.object_id)
                continue
            outcome.decoded[obj.object_id] = ids
            log.info("decode_finished", segments=len(ids) - chunks, speech_chunks=chunks)
        if skipped and not outcome.claimed and not item.removed:
            ctx.verdict.outcome = skipped[0]

    async def _removal(self, removed: ObjectRemoved, ctx: RecordContext) -> Output | None:
        """Forward a deletion to the index (``media.removals``, keyed by bucket/key), unless a
        filter declines the key or a newer event for it was already accepted."""
        log = ctx.log.bind(uri=removed.uri, event_name=removed.event_name)
        probe = ObjectCreated(uri=removed.uri, bucket=removed.bucket, key=removed.key)
        if (rejected_by := self.filter.rejects(probe)) is not None:
            log.info("removal_filtered", filter=rejected_by)
            await self.counts.add(f"filtered:{rejected_by}")
            return None
        if removed.sequencer:
            order = await self.sequencers.advance(removed.bucket, removed.key, removed.sequencer)
            if order is SequencerOutcome.STALE:
                log.info("stale_event_skipped", sequencer=removed.sequencer)
                await self.counts.add("stale")
                return None
        await self.counts.add("removed")
        log.info("removal_forwarded", object_id=removed.object_id)
        return Output(self.settings.topic_removals, f"{removed.bucket}/{removed.key}", removed)

    async def _already_failed(self, object_id: str) -> bool:
        progress = await self.progress.get(object_id)
        return progress is not None and progress.state is ObjectState.FAILED

    async def _segments(
        self, obj: ObjectCreated, sized: Callable[[int], None]
    ) -> AsyncIterator[DecodedSegment | DecodedSpeech]:
        location = await self.source.resolve(obj, sized)
        options = self.source.ffmpeg_options(location)
        timeout_s = self.settings.read_timeout_s
        name = redact(obj.uri)  # how a reader (http(s) source) is shown in errors
        try:
            async for segment in iterate_in_thread(
                lambda: decode_segments(location, self.policy, options=options, timeout_s=timeout_s, name=name),
                self._executor,
            ):
                yield segment
        except MediaError as exc:
            raise PermanentError(exc.reason, str(exc), object_id=obj.object_id) from exc
        finally:
            if not isinstance(location, str):
                location.close()

    async def delivered(self, item: EventBatch, ctx: RecordContext) -> None:
        outcome = self._outcomes.get(ctx.owner, _RecordOutcome())
        for object_id, ids in outcome.decoded.items():
            for sid in ids:
                await self.progress.mark("decoded", object_id, sid)
            await self.progress.set_total(object_id, len(ids))
        for object_id, error in outcome.failed.items():
            await self.progress.fail(object_id, error)
        self._outcomes.pop(ctx.owner, None)  # only now: a Redis outage above retries this hook

    def object_id_of(self, item: EventBatch | None, ctx: RecordContext) -> str | None:
        # Records on the objects topic are keyed by bucket/key (or not at all), not by object id.
        return item.objects[0].object_id if item is not None and len(item.objects) == 1 else None

    async def dead_lettered(self, item: EventBatch | None, letter: DeadLetter, ctx: RecordContext) -> None:
        # Only objects this record owns and did not finish: a duplicate, stale or filtered object
        # in the same event belongs to another run.
        outcome = self._outcomes.get(ctx.owner, _RecordOutcome())
        for object_id in outcome.claimed:
            if object_id not in outcome.decoded and object_id not in outcome.failed:
                await self.progress.fail(object_id, f"{letter.reason}: {letter.message}")
        self._outcomes.pop(ctx.owner, None)


def _to_batch(
    obj: ObjectCreated, segment: DecodedSegment, event_time: datetime | None, chunks: int = 0
) -> SegmentBatch:
    page = segment if isinstance(segment, DecodedPage) else None
    return SegmentBatch(
        speech_chunks=chunks if segment.reason == "end" else 0,
        object_id=obj.object_id,
        segment_id=segment_id(obj.object_id, segment.index),
        segment_index=segment.index,
        source_uri=obj.uri,
        media_kind="page" if page else "image" if segment.end_s == 0.0 and len(segment.frames) == 1 else "video",
        start_s=segment.start_s,
        end_s=segment.end_s,
        page_number=page.page_number if page else None,
        reason=segment.reason,
        frames=[
            Frame(index=f.index, pts_s=f.pts_s, width=f.width, height=f.height, jpeg=f.jpeg) for f in segment.frames
        ],
        bucket=obj.bucket,
        key=obj.key,
        version=obj.version_order,
        thumbnail=segment.thumbnail,
        event_time=event_time,
    )


def _to_chunk(obj: ObjectCreated, speech: DecodedSpeech, event_time: datetime | None) -> SpeechChunk:
    return SpeechChunk(
        object_id=obj.object_id,
        segment_id=speech_segment_id(obj.object_id, speech.index),
        segment_index=speech.index,
        source_uri=obj.uri,
        start_s=speech.start_s,
        end_s=speech.end_s,
        flac=speech.flac,
        language_hint=speech.language,
        bucket=obj.bucket,
        key=obj.key,
        version=obj.version_order,
        event_time=event_time,
    )
