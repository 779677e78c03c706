"""Documents through the decode stage (issue 12, item 4): PDFs and a multi-page TIFF in S3
become one `page` segment per page, read through presigned URLs as the workers read them,
and bad documents are dead-lettered with their reason while their progress fails.

Real Tansu broker, redis-server and SeaweedFS; the decode stage and the consumer loop as the
workers run them.
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from PIL import Image
from redis.asyncio import Redis

from schemas.events import ObjectCreated
from schemas.progress import ObjectState
from schemas.segments import SegmentBatch
from tests.document_factory import PAGE_COLOURS, Page, build_pdf, build_tiff, coloured_pages
from tests.stack_s3 import stack_s3_client
from workers.decode.stage import DecodeStage
from workers.localstack import StackEndpoints
from workers.runtime.kafka import ensure_topics, read_topics
from workers.runtime.loop import StageLoop
from workers.settings import DecodeSettings
from workers.stages import REGISTRY
from workers.state import ProgressStore, RedisKeys
from workers.state.dead_letter_log import read_letters

pytestmark = pytest.mark.integration

_GOOD = {
    # Text on coloured pages: what a document page looks like to the renderer.
    "report.pdf": build_pdf([Page(612, 792, colour, text_lines=40) for colour in PAGE_COLOURS[:4]]),
    "scan.tif": build_tiff([((1200, 1600), colour) for colour in PAGE_COLOURS[:3]]),
}
_BAD = {
    "locked.pdf": (build_pdf(coloured_pages(2), user_password="secret"), "encrypted_document"),
    "broken.pdf": (b"%PDF-1.7\n" + b"\x00garbage, no objects, no xref\n" * 200, "corrupt_media"),
    "tome.pdf": (build_pdf(coloured_pages(60)), "too_many_pages"),
}


async def _eventually(check: Any, timeout_s: float = 60.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        if result := await check():
            return result
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.2)


def _colour(jpeg: bytes) -> tuple[int, ...]:
    image = Image.open(io.BytesIO(jpeg)).convert("RGB")
    # Lower right, inside the page: text starts top left, and up to 31 px along the right or
    # bottom edge may be the white that pads a PDF page to the 32 px grid.
    return tuple(image.getpixel((image.width * 4 // 5, image.height * 4 // 5)))  # type: ignore[arg-type]


async def test_documents_become_page_segments_and_bad_ones_are_dead_lettered(
    stack_env: StackEndpoints, unique: str, tmp_path: Path
) -> None:
    settings = DecodeSettings(
        topic_objects=f"objects-{unique}",
        topic_segments=f"segments-{unique}",
        decode_group=f"decode-{unique}",
        retry_backoff_s=0.05,
        max_pages=50,
    )
    await ensure_topics(settings, REGISTRY.topics(settings))
    bodies = {**_GOOD, **{name: body for name, (body, _) in _BAD.items()}}
    events = {
        name: ObjectCreated(
            uri=f"s3://media/{unique}/{name}", bucket="media", key=f"{unique}/{name}", size=len(body), etag=unique
        )
        for name, body in bodies.items()
    }
    async with stack_s3_client(stack_env) as s3:
        for name, body in bodies.items():
            await s3.put_object(Bucket="media", Key=f"{unique}/{name}", Body=body)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for name, event in events.items():
            await producer.send_and_wait(settings.topic_objects, event.to_bytes(), key=name.encode())
    finally:
        await producer.stop()

    redis = Redis.from_url(settings.redis_url)
    store = ProgressStore(redis, RedisKeys(settings.key_prefix))
    stop = asyncio.Event()
    loop = StageLoop(DecodeStage(settings, redis), settings, settings.decode_group, 2)
    task = asyncio.create_task(loop.run(stop))
    try:

        async def all_finished() -> bool:
            assert not task.done(), f"the stage stopped: {task.exception() if task.done() else ''}"
            states = [await store.get(event.object_id) for event in events.values()]
            return all(p is not None and p.state in (ObjectState.DECODED, ObjectState.FAILED) for p in states)

        await _eventually(all_finished)

        records = await read_topics(settings.kafka_bootstrap, [settings.topic_segments])
        batches = [SegmentBatch.model_validate_json(r.value or b"") for r in records]
        by_object: dict[str, list[SegmentBatch]] = {}
        for batch in batches:
            by_object.setdefault(batch.object_id, []).append(batch)
        assert set(by_object) == {events[name].object_id for name in _GOOD}, "bad documents publish nothing"
        for name, pages in (("report.pdf", 4), ("scan.tif", 3)):
            mine = sorted(by_object[events[name].object_id], key=lambda b: b.segment_index)
            assert [(b.media_kind, b.page_number, b.segment_index) for b in mine] == [
                ("page", n + 1, n) for n in range(pages)
            ], name
            assert all(len(b.frames) == 1 and b.thumbnail and b.key == f"{unique}/{name}" for b in mine)
            assert all(b.frames[0].width * b.frames[0].height <= settings.page_max_pixels for b in mine)
            colours = [_colour(b.frames[0].jpeg) for b in mine]
            assert all(
                max(abs(a - e) for a, e in zip(c, PAGE_COLOURS[i], strict=True)) <= 12 for i, c in enumerate(colours)
            ), (name, colours)
            progress = await store.get(events[name].object_id)
            assert progress is not None and progress.state is ObjectState.DECODED and progress.segments_total == pages

        letters = {stored.letter.object_id: stored.letter for stored in await read_letters(settings)}
        for name, (_, reason) in _BAD.items():
            object_id = events[name].object_id
            letter = letters[object_id]
            assert (letter.reason, letter.stage, letter.kind) == (reason, "decode", "permanent"), letter.message
            assert "X-Amz-Signature" not in letter.message and name in letter.message
            failed = await store.get(object_id)
            assert failed is not None and failed.state is ObjectState.FAILED
            assert failed.error is not None and failed.error.startswith(reason), failed.error
        assert "60 pages" in letters[events["tome.pdf"].object_id].message
        assert loop.metrics.retries == 0, "bad documents are permanent: nothing was retried"
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await redis.aclose()
