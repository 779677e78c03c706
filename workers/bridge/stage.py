"""``capstream worker s3-events``: SeaweedFS filer events in, S3 ObjectCreated notifications out.

With it, any S3 client uploading into the bucket (``aws s3 cp``, an SDK, a browser upload)
starts the pipeline. Output records are keyed ``<bucket>/<key>`` so events of one key stay in
order on the objects topic; the decode worker still checks sequencers, as order can only be
as good as the filer's.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from urllib.parse import unquote_plus

from redis.asyncio import Redis

from workers.bridge.filer_proto import EventNotification, FilerProtoError
from workers.bridge.translate import Skipped, translate
from workers.runtime.errors import PermanentError
from workers.runtime.kafka import dlq_topic, ensure_topics
from workers.runtime.stage import Output, RecordContext, Stage
from workers.settings import BridgeSettings
from workers.stages import REGISTRY
from workers.state import EventCounts, RedisKeys


class S3EventsStage(Stage[EventNotification]):
    name = "s3-events"

    def __init__(self, settings: BridgeSettings, redis: Redis) -> None:
        self.settings = settings
        self.input_topic = settings.topic_filer_events
        self.output_topics = (settings.topic_objects,)
        self.counts = EventCounts(redis, RedisKeys(settings.key_prefix), self.name)

    async def setup(self) -> None:
        # weed creates its topic on first publish; the bridge may start before any upload.
        topics = [self.input_topic, dlq_topic(self.input_topic), self.settings.topic_objects]
        await ensure_topics(self.settings, topics, REGISTRY.topic_configs(self.settings))

    def parse(self, value: bytes) -> EventNotification:
        try:
            return EventNotification.parse(value)
        except FilerProtoError as exc:
            raise PermanentError("malformed_filer_event", f"not a SeaweedFS EventNotification: {exc}") from exc

    async def process(self, item: EventNotification, ctx: RecordContext) -> AsyncGenerator[Output, None]:
        result = translate(ctx.key, item, self.settings.s3_region)
        if isinstance(result, Skipped):
            ctx.log.debug("filer_event_skipped", reason=result.reason, path=result.path)
            await self.counts.add(f"skipped:{result.reason}")
            return
        record = result.records[0]
        bucket, key = record.s3.bucket.name, unquote_plus(record.s3.object.key)
        ctx.log.info(
            "object_removed_bridged" if record.event_name.startswith("ObjectRemoved") else "object_created_bridged",
            bucket=bucket,
            key=key,
            size=record.s3.object.size,
            etag=record.s3.object.e_tag,
            sequencer=record.s3.object.sequencer,
        )
        await self.counts.add("forwarded")
        yield Output(self.settings.topic_objects, f"{bucket}/{key}", result)
