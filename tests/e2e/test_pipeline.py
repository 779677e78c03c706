"""End to end: real broker, Redis, S3 and vLLM engines on CPU; media in, captions and
embeddings out; duplicates do no new work; a corrupt file fails alone with a DLQ reason; what
is said in a video is found by search at its time, and silent or soundless media finish without
transcript rows; every done object gets a summary with chapters, and loses it when it is
removed. A webhook whose receiver never answers holds the webhooks stage (in the same
process) for the whole run, and every object still finishes."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from redis.asyncio import Redis

from loadtest.media_factory import make_corrupt_file, make_image, make_montage_video, make_short_clip, photos
from schemas.captions import Caption
from schemas.dead_letter import DeadLetter
from schemas.embeddings import Embedding
from schemas.events import ObjectRemoved
from schemas.progress import ObjectState
from schemas.segments import SegmentBatch
from schemas.speech import Transcript
from schemas.summary import ObjectSummary
from tests.speech_media import no_audio_video, silent_video, spoken_video
from workers.cli.submit import Submitted, submit, wait_for
from workers.cli.worker_process import spawn_worker, stop_worker
from workers.index.objects import ObjectsTable
from workers.index.table import connect
from workers.index.writer import SegmentIndex
from workers.localstack import StackEndpoints
from workers.offline_profile import offline_env
from workers.runtime.kafka import read_topics
from workers.samples import SPOKEN_SENTENCE, SPOKEN_WORD
from workers.settings import DecodeSettings, IndexSettings, S3Settings
from workers.state import ProgressStore, RedisKeys, ResultStore
from workers.webhooks.store import WebhookStore

pytestmark = pytest.mark.e2e

MINILM_DIM = 384


@pytest.fixture
def media(tmp_path: Path) -> dict[str, Path]:
    paths = {
        "montage": tmp_path / "montage.mp4",
        "still": tmp_path / "cat photo.jpg",  # a space: keys are URL-encoded in S3 events
        "clip": tmp_path / "clip.mp4",
        "corrupt": tmp_path / "broken.mp4",
    }
    make_montage_video(paths["montage"], photos(3), seconds_each=2.0)
    make_image(paths["still"], "JPEG")
    make_short_clip(paths["clip"], seconds=1.5)
    make_corrupt_file(paths["corrupt"])
    return paths


@dataclass(frozen=True)
class SpokenMedia:
    paths: dict[str, Path]
    voice: tuple[float, float]  # where the sentence is said in "spoken", media seconds


@pytest.fixture
def speech_media(tmp_path: Path) -> SpokenMedia:
    paths = {name: tmp_path / f"{name}.mp4" for name in ("spoken", "silent", "soundless")}
    voice = spoken_video(paths["spoken"], SPOKEN_SENTENCE, at_s=3.0, duration_s=8.0)
    silent_video(paths["silent"], duration_s=4.0)
    no_audio_video(paths["soundless"], duration_s=3.0)
    return SpokenMedia(paths, voice)


@dataclass
class Workers:
    proc: subprocess.Popen[bytes]
    log_path: Path

    def events(self, name: str) -> list[dict[str, Any]]:
        """Structured log events of the worker process with this event name."""
        found = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                if record.get("event") == name:
                    found.append(record)
        return found


class HungReceiver:
    """Accepts webhook POSTs on 127.0.0.1 and never answers them, until closed."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}/hook"
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self._server.close()
        for conn in self.held:
            conn.close()


@pytest.fixture
def hung_receiver() -> Iterator[HungReceiver]:
    receiver = HungReceiver()
    try:
        yield receiver
    finally:
        receiver.close()


# Every POST waits on the hung receiver for the whole run (the webhooks stage's slots stay
# taken); once it closes, a second failed try dead-letters the outcome, so shutdown is quick.
WEBHOOK_ENV = {
    "CAPSTREAM_WEBHOOK_ALLOW_PRIVATE": "true",
    "CAPSTREAM_WEBHOOK_TIMEOUT_S": "900",
    "CAPSTREAM_WEBHOOK_MAX_ATTEMPTS": "2",
    "CAPSTREAM_WEBHOOK_BACKOFF_S": "0.1",
}


@pytest.fixture
def workers(stack_env: StackEndpoints, tmp_path: Path) -> Iterator[Workers]:
    """Every stage in one real worker process (`capstream run`), offline CPU models."""
    log_path = tmp_path / "workers.log"
    env = {**os.environ, **offline_env(), **WEBHOOK_ENV, "CAPSTREAM_LOG_LEVEL": "INFO"}
    proc = spawn_worker(["run"], env, log_path)
    try:
        yield Workers(proc, log_path)
    finally:
        stop_worker(proc)
        sys.stderr.write(log_path.read_text()[-4000:])


async def _records(settings: S3Settings, topic: str) -> list[tuple[str, bytes]]:
    return [((r.key or b"").decode(), r.value or b"") for r in await read_topics(settings.kafka_bootstrap, [topic])]


async def _indexed_segments(objects: set[str], expected: set[str], timeout_s: float = 60.0) -> set[str]:
    """Segment ids of these objects in the index table, once they match or the time is up."""

    def read() -> set[str]:
        table = SegmentIndex(IndexSettings()).table()
        if table is None:
            return set()
        return {r["segment_id"] for r in table.to_arrow().to_pylist() if r["object_id"] in objects}

    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        found = await asyncio.to_thread(read)
        if found == expected or asyncio.get_running_loop().time() >= deadline:
            return found
        await asyncio.sleep(0.5)


async def _committed_events(settings: S3Settings) -> int:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=DecodeSettings().decode_group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        return sum(
            [
                await consumer.committed(TopicPartition(settings.topic_objects, p)) or 0
                for p in range(settings.topic_partitions)
            ]
        )
    finally:
        await consumer.stop()


async def test_pipeline_end_to_end(
    media: dict[str, Path], speech_media: SpokenMedia, workers: Workers, hung_receiver: HungReceiver
) -> None:
    settings = S3Settings()
    offline = offline_env()
    hooks = Redis.from_url(settings.redis_url)
    await WebhookStore(hooks, RedisKeys(settings.key_prefix)).add(
        hung_receiver.url, ["default"], ["object.done", "object.failed"]
    )
    await hooks.aclose()
    submitted = await submit([*media.values(), *speech_media.paths.values()], settings)
    by_name = {Path(s.name).stem: s for s in submitted}
    names = {s.object_id: s.key for s in submitted}
    states = await wait_for(list(names), names, settings, timeout_s=300, show=False)
    assert workers.proc.poll() is None, "worker process died"
    # Both engines share the process: nothing may fail transiently (vLLM state is process-global).
    assert workers.events("retrying") == []

    redis = Redis.from_url(settings.redis_url)
    keys = RedisKeys(settings.key_prefix)
    try:
        for name in ("montage", "cat photo", "clip"):
            obj = by_name[name]
            prog = states[obj.object_id]
            assert prog is not None and prog.state is ObjectState.DONE, (name, prog)
            rows = await ResultStore(redis, keys).get(obj.object_id)
            assert prog.segments_total == len(rows) == prog.captioned == prog.embedded
            assert [r.segment_index for r in rows] == list(range(len(rows)))
            for row in rows:
                assert row.caption_model == offline["CAPSTREAM_CAPTION_MODEL_NAME"]
                assert row.model == offline["CAPSTREAM_EMBED_MODEL_NAME"] and row.dim == MINILM_DIM
                assert row.end_s >= row.start_s
        montage_rows = await ResultStore(redis, keys).get(by_name["montage"].object_id)
        assert len(montage_rows) == 3, "three photographs -> three scenes"
        assert montage_rows[-1].end_s == pytest.approx(6.0, abs=0.1)
        still_rows = await ResultStore(redis, keys).get(by_name["cat photo"].object_id)
        assert len(still_rows) == 1 and still_rows[0].start_s == still_rows[0].end_s == 0.0

        broken = states[by_name["broken"].object_id]
        assert broken is not None and broken.state is ObjectState.FAILED
        assert broken.error and broken.error.startswith("corrupt_media")
        letters = [DeadLetter.model_validate_json(v) for _, v in await _records(settings, "media.objects.dlq")]
        mine = [d for d in letters if d.object_id == by_name["broken"].object_id]
        assert len(mine) == 1 and mine[0].reason == "corrupt_media" and mine[0].stage == "decode"

        # Every segment of every good object went through the caption engine and embedder.
        good = {by_name[n].object_id for n in ("montage", "cat photo", "clip")}
        expected = {r.segment_id for oid in good for r in await ResultStore(redis, keys).get(oid)}
        segments = [SegmentBatch.model_validate_json(v) for _, v in await _records(settings, settings.topic_segments)]
        captions = [Caption.model_validate_json(v) for _, v in await _records(settings, settings.topic_captions)]
        embeddings = [Embedding.model_validate_json(v) for _, v in await _records(settings, settings.topic_embeddings)]
        assert all(abs(sum(v * v for v in e.vector) - 1.0) < 1e-3 for e in embeddings)  # normalised
        for records in (segments, captions, embeddings):
            assert {r.segment_id for r in records if r.object_id in good} == expected
        assert all(c.backend == "vllm" and c.frame_pts for c in captions if c.object_id in good)

        # ... and the index stage made one searchable row of each (the table may lag the topic).
        indexed = await _indexed_segments(good, expected)
        assert indexed == expected, "index rows differ from the segments"

        await _duplicate_does_no_new_work(settings, by_name["montage"], redis, keys)
        await _speech_is_searchable(settings, by_name, states, speech_media.voice, redis, keys)
        await _summaries_follow_their_objects(settings, by_name, states)

        # All of that happened while the webhook's receiver held every outcome's POST unanswered.
        for _ in range(150):
            if len(hung_receiver.held) >= len(submitted):
                break
            await asyncio.sleep(0.2)
        assert len(hung_receiver.held) == len(submitted), "one POST per finished object, none answered"
    finally:
        await redis.aclose()


async def _speech_is_searchable(
    settings: S3Settings,
    by_name: dict[str, Submitted],
    states: dict[str, Any],
    voice: tuple[float, float],
    redis: Redis,
    keys: RedisKeys,
) -> None:
    """The spoken video is done with its speech transcribed and embedded; a word of the
    sentence finds it with a time range that holds the voice; silent and soundless media are
    done with no transcript at all."""
    spoken = by_name["spoken"].object_id
    prog = states[spoken]
    assert prog is not None and prog.state is ObjectState.DONE, prog
    rows = await ResultStore(redis, keys).get(spoken)
    assert prog.transcribed >= 1 and prog.segments_total == len(rows) == prog.captioned + prog.transcribed
    transcripts = [Transcript.model_validate_json(v) for _, v in await _records(settings, settings.topic_transcripts)]
    said = [t for t in transcripts if t.object_id == spoken]
    assert len(said) == prog.transcribed and all(t.backend == "pocketsphinx" for t in said)
    assert SPOKEN_WORD in " ".join(t.text for t in said).split(), [t.text for t in said]
    for name in ("silent", "soundless"):
        quiet = states[by_name[name].object_id]
        assert quiet is not None and quiet.state is ObjectState.DONE and quiet.transcribed == 0, (name, quiet)
        assert not [t for t in transcripts if t.object_id == by_name[name].object_id]

    # As a user searches: `capstream search`, with the offline embed model.
    assert await _indexed_segments({spoken}, {r.segment_id for r in rows}) == {r.segment_id for r in rows}
    out = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "workers.cli.main",
            "search",
            SPOKEN_WORD,
            "--offline",
            "--json",
            "--modality",
            "speech",
        ],
        env={**os.environ, **offline_env()},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    hits = json.loads(out.stdout)
    assert hits and hits[0]["object_id"] == spoken and hits[0]["modality"] == "speech", hits
    assert hits[0]["start_s"] <= voice[0] + 0.5 <= hits[0]["end_s"], (hits[0], voice)  # where the voice begins


async def _summaries(object_ids: set[str]) -> dict[str, ObjectSummary]:
    settings = IndexSettings()
    return await asyncio.to_thread(lambda: ObjectsTable(connect(settings), settings).get(object_ids))


async def _summaries_follow_their_objects(
    settings: S3Settings, by_name: dict[str, Submitted], states: dict[str, Any]
) -> None:
    """Every done object gets a summary with chapters in order inside its duration (the summarize
    stage, on the tiny caption engine); the failed one gets none; removing an object removes
    its summary."""
    done = {s.object_id for s in by_name.values() if states[s.object_id].state is ObjectState.DONE}
    failed = by_name["broken"].object_id
    found: dict[str, ObjectSummary] = {}
    for _ in range(240):
        found = await _summaries(done | {failed})
        if set(found) >= done:
            break
        await asyncio.sleep(0.5)
    assert set(found) == done, f"summaries of {sorted(set(found))}, done: {sorted(done)}"

    def ends(oid: str) -> float:
        table = SegmentIndex(IndexSettings()).table()
        assert table is not None
        return max(r["end_s"] for r in table.to_arrow().to_pylist() if r["object_id"] == oid)

    for oid, summary in found.items():
        assert summary.summary and summary.chapters and summary.passes >= 1, summary
        assert summary.duration_s == pytest.approx(await asyncio.to_thread(ends, oid))
        starts = [c.start_s for c in summary.chapters]
        assert starts == sorted(starts), summary.chapters
        for chapter in summary.chapters:
            assert 0.0 <= chapter.start_s <= chapter.end_s <= summary.duration_s, (summary.duration_s, chapter)

    # A deleted object takes its summary with it (the index-removals consumer, same process).
    clip = by_name["clip"]
    bucket = clip.event["Records"][0]["s3"]["bucket"]["name"]
    removed = ObjectRemoved(uri=f"s3://{bucket}/{clip.key}", bucket=bucket, key=clip.key)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic_removals, removed.to_bytes(), key=f"{bucket}/{clip.key}".encode())
    finally:
        await producer.stop()
    for _ in range(120):
        if clip.object_id not in await _summaries({clip.object_id}):
            break
        await asyncio.sleep(0.5)
    assert clip.object_id not in await _summaries({clip.object_id}), "the removed object kept its summary"
    assert set(await _summaries(done - {clip.object_id})) == done - {clip.object_id}


async def _duplicate_does_no_new_work(settings: S3Settings, obj: Submitted, redis: Redis, keys: RedisKeys) -> None:
    before = await ProgressStore(redis, keys).get(obj.object_id)
    segments_before = [k for k, _ in await _records(settings, settings.topic_segments) if k == obj.object_id]
    events_before = await _committed_events(settings)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic_objects, json.dumps(obj.event).encode(), key=obj.key.encode())
    finally:
        await producer.stop()
    for _ in range(100):  # until the decode group has consumed and committed the duplicate
        if await _committed_events(settings) > events_before:
            break
        await asyncio.sleep(0.2)
    assert await _committed_events(settings) == events_before + 1
    after = await ProgressStore(redis, keys).get(obj.object_id)
    segments_after = [k for k, _ in await _records(settings, settings.topic_segments) if k == obj.object_id]
    assert segments_after == segments_before, "duplicate event re-decoded the object"
    assert before is not None and after is not None
    assert (after.decoded, after.captioned, after.embedded, after.state) == (
        before.decoded,
        before.captioned,
        before.embedded,
        before.state,
    )
