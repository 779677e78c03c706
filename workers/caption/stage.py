"""Caption stage: one segment batch -> one caption, via the configured vLLM backend."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from redis.asyncio import Redis

from schemas.captions import Caption
from schemas.segments import SegmentBatch
from workers.caption.backend import CaptionBackend
from workers.caption.frame_check import check_frames
from workers.caption.prompt import build_caption_messages
from workers.runtime.errors import PermanentError
from workers.runtime.stage import ModelStage, Output, RecordContext
from workers.settings import CaptionSettings
from workers.state import ProgressStore, RedisKeys


class CaptionStage(ModelStage[SegmentBatch]):
    name = "caption"
    input_model = SegmentBatch
    done_marker = "captioned"
    backend: CaptionBackend
    progress: ProgressStore

    def __init__(self, settings: CaptionSettings, redis: Redis, backend: CaptionBackend) -> None:
        self.settings = settings
        self.input_topic = settings.topic_segments
        self.output_topics = (settings.topic_captions,)
        self.progress = ProgressStore(
            redis, RedisKeys(settings.key_prefix), failed_ttl_s=settings.failed_progress_ttl_s
        )
        self.backend = backend

    async def process(self, item: SegmentBatch, ctx: RecordContext) -> AsyncGenerator[Output, None]:
        log = ctx.log.bind(object_id=item.object_id, segment_id=item.segment_id)
        if await self.progress.is_marked("captioned", item.segment_id):
            log.info("segment_already_captioned")
            return
        if len(item.frames) > self.settings.caption_max_images:
            raise PermanentError(
                "too_many_frames",
                f"{len(item.frames)} frames > CAPSTREAM_CAPTION_MAX_IMAGES={self.settings.caption_max_images}",
                object_id=item.object_id,
                segment_id=item.segment_id,
            )
        # A frame the engine cannot read is the record's fault: dead-letter it now rather than
        # fail engine calls with it (and make the engine look broken).
        check_frames(item, self.settings.caption_max_frame_pixels)
        result = await self.backend.caption(build_caption_messages(item, self.settings.caption_prompt))
        caption = Caption(
            object_id=item.object_id,
            segment_id=item.segment_id,
            segment_index=item.segment_index,
            source_uri=item.source_uri,
            start_s=item.start_s,
            end_s=item.end_s,
            frame_pts=[f.pts_s for f in item.frames],
            text=result.text,
            model=self.backend.model,
            backend=self.backend.name,  # type: ignore[arg-type]
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            latency_s=result.latency_s,
        )
        log.info("segment_captioned", latency_s=round(result.latency_s, 3), chars=len(result.text))
        yield Output(self.settings.topic_captions, item.object_id, caption)

    async def delivered(self, item: SegmentBatch, ctx: RecordContext) -> None:
        await self.progress.mark("captioned", item.object_id, item.segment_id)
