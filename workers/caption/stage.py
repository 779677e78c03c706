"""Caption stage: one segment batch -> one caption, via the configured vLLM backend."""

from __future__ import annotations

from redis.asyncio import Redis
from structlog.typing import FilteringBoundLogger

from schemas.captions import Caption, CaptionFormat
from schemas.segments import SegmentBatch
from workers.caption.backend import CaptionBackend
from workers.caption.frame_check import check_frames
from workers.caption.prompt import build_caption_messages, caption_input
from workers.caption.structured import parse_structure, render_text, with_response_schema
from workers.runtime.errors import PermanentError
from workers.runtime.stage import ModelStage, RecordContext
from workers.settings import CaptionSettings
from workers.state import ProgressStore


class CaptionStage(ModelStage[SegmentBatch, CaptionBackend]):
    name = "caption"
    input_model = SegmentBatch
    done_marker = "captioned"

    def __init__(self, settings: CaptionSettings, redis: Redis, backend: CaptionBackend) -> None:
        progress = ProgressStore.for_worker(redis, settings)
        super().__init__(settings.topic_segments, settings.topic_captions, progress, backend)
        self.settings = settings

    async def run_model(self, item: SegmentBatch, ctx: RecordContext, log: FilteringBoundLogger) -> Caption:
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
        messages = build_caption_messages(item, self.settings.caption_prompt, self.settings.caption_input)
        # A page's caption is its transcription: prose, not JSON strings with length bounds.
        caption_format: CaptionFormat = "text" if item.media_kind == "page" else self.settings.caption_format
        if caption_format == "structured":
            max_tokens = self.settings.caption_structured_max_tokens
            messages = with_response_schema(messages, item.start_s, item.end_s, max_tokens)
        result = await self.backend.caption(messages)
        structure = parse_structure(result.text, item.start_s, item.end_s) if caption_format == "structured" else None
        if caption_format == "structured" and structure is None:
            # Cut off at the token limit: its words still go to search, as plain text.
            log.warning("structured_caption_unparsed", completion_tokens=result.completion_tokens)
        caption = Caption(
            **item.segment_ref(),
            frame_pts=[f.pts_s for f in item.frames],
            text=render_text(structure) if structure else result.text,
            caption_format=caption_format,
            structure=structure,
            model=self.backend.model,
            backend=self.backend.name,  # type: ignore[arg-type]
            prompt_tokens=result.prompt_tokens,
            frame_count=len(item.frames),
            visual_tokens=result.visual_tokens,
            caption_input=caption_input(messages),
            completion_tokens=result.completion_tokens,
            latency_s=result.latency_s,
        )
        ctx.metrics.tokens(result.prompt_tokens, result.completion_tokens)
        log.info("segment_captioned", latency_s=round(result.latency_s, 3), chars=len(result.text))
        return caption
