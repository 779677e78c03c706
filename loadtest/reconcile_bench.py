"""``capstream reconcile`` at scale: peak RSS and records/s on N segments, before and after.

    python -m loadtest.reconcile_bench [--segments N] [--per-object S] [--dim D] [--before REF]

Reconcile rebuilds Redis from the whole history on the topics, so its memory and time grow
with that history: the version that kept every embedding (vector included) in memory needed
~100 KB per segment at 4096 dimensions and made ~3 sequential Redis round trips per segment.
This bench measures the one in the tree against that history, on the project's own local
stack (``workers.localstack.start_stack``: Tansu, redis-server, SeaweedFS on free ports):

- the topics (their own names) get N segment batches (S per object, one tiny JPEG each: the
  frames are skipped by reconcile, and real ones would only fill the broker), N captions and
  N embeddings of D dimensions, plus dead letters: 1% more objects failed at decode, and one
  caption letter per 50 objects for a segment that another copy finished (not a failure);
  the last object's last segment has no caption or embedding and a caption dead letter (it
  fails);
- each variant runs as its own child process on an empty Redis (``FLUSHDB`` of the bench's
  own redis-server), the way an operator runs ``capstream reconcile``; the child reports its
  peak RSS (``VmHWM``; before the run: the interpreter and imports) and the run's wall
  time; records/s = (segments + captions + embeddings + dead letters) / run time;
- ``--before REF``: ``git archive REF schemas workers`` into a temporary directory runs first
  as the baseline (the child's working directory comes first on ``sys.path``, so it imports
  that tree), then the tree this file is in; the two must report the same counts, and the
  ratios after/before are printed.

The last line is ``reconcile_bench: segments=N dim=D peak_rss_mb=… records_s=…`` (with
``before_…`` and ``ratio_…`` figures when a baseline ran). Not a test: figures depend on the
machine. Results: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import itertools
import json
import os
import random
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from PIL import Image
from redis import Redis

from schemas.base import Message
from schemas.captions import Caption
from schemas.dead_letter import DeadLetter
from schemas.embeddings import Embedding
from schemas.ids import embedding_id, segment_id
from schemas.segments import Frame, SegmentBatch, SegmentReason
from workers.localstack import start_stack, stop_stack
from workers.runtime.kafka import dlq_topic, ensure_topics
from workers.settings import DecodeSettings
from workers.stages import REGISTRY

ROOT = Path(__file__).resolve().parents[1]
# Runs in the child, against whichever tree is its working directory: only the API both the
# old and the new reconcile have (``Reconciler(settings, redis).run()``).
CHILD = """
import asyncio, json, time
from dataclasses import asdict
from redis.asyncio import Redis
import workers.state.reconcile as module
from workers.settings import DecodeSettings

def hwm_kb():  # this process's own peak RSS (ru_maxrss would include the parent's at fork)
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))

async def main():
    settings = DecodeSettings()
    redis = Redis.from_url(settings.redis_url)
    idle_kb = hwm_kb()
    t0 = time.perf_counter()
    counts = await module.Reconciler(settings, redis).run()
    seconds = time.perf_counter() - t0
    await redis.aclose()
    peak_kb = hwm_kb()
    print(json.dumps({"module": module.__file__, "counts": asdict(counts), "seconds": seconds,
                      "idle_rss_kb": idle_kb, "peak_rss_kb": peak_kb}))

asyncio.run(main())
"""


def jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 200, 30)).save(out, format="JPEG")
    return out.getvalue()


def segment(object_id: str, index: int, reason: SegmentReason, key: str, sequencer: str, jpeg: bytes) -> SegmentBatch:
    """Segment ``index`` (2 s each) of ``s3://media/<key>``, one frame: what reconcile reads of it."""
    return SegmentBatch(
        object_id=object_id,
        segment_id=segment_id(object_id, index),
        segment_index=index,
        source_uri=f"s3://media/{key}",
        media_kind="video",
        start_s=index * 2.0,
        end_s=index * 2.0 + 2.0,
        reason=reason,
        frames=[Frame(index=0, pts_s=index * 2.0, width=16, height=16, jpeg=jpeg)],
        bucket="media",
        key=key,
        version=f"s:{sequencer}",
    )


def history(settings: DecodeSettings, segments: int, per_object: int, dim: int) -> Iterator[tuple[str, str, Message]]:
    """(topic, key, message) of every record the bench publishes."""
    rng = random.Random(7)
    frame = jpeg()
    objects = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range((segments + per_object - 1) // per_object)]
    for n, object_id in enumerate(objects):
        count = min(per_object, segments - n * per_object)
        for i in range(count):
            last = i == count - 1
            seg = segment(object_id, i, "end" if last else "cut", f"bench/{n}.mp4", f"{n + 1:032X}", frame)
            yield settings.topic_segments, object_id, seg
            if n == len(objects) - 1 and last:
                continue  # in flight: decoded, not yet captioned
            text = f"segment {i} of object {n}: a person walks a dog along a beach at sunset"
            caption = Caption(**seg.segment_ref(), frame_pts=[seg.start_s], text=text, model="m", backend="vllm",
                              latency_s=0.1)  # fmt: skip
            yield settings.topic_captions, object_id, caption
            vector = [rng.uniform(-1.0, 1.0) for _ in range(dim)]
            embedding = Embedding(**seg.segment_ref(), embedding_id=embedding_id(seg.segment_id, "e"), caption=text,
                                  caption_model="m", model="e", dim=dim, vector=vector)  # fmt: skip
            yield settings.topic_embeddings, object_id, embedding
        if n % 50 == 1:
            sid = segment_id(object_id, 0)
            yield dlq_topic(settings.topic_segments), object_id, _letter("caption", object_id, sid)
    in_flight = objects[-1]
    last = segment_id(in_flight, min(per_object, segments - (len(objects) - 1) * per_object) - 1)
    yield dlq_topic(settings.topic_segments), in_flight, _letter("caption", in_flight, last)
    for _ in range(len(objects) // 100):  # failed at decode: no segments
        object_id = str(uuid.UUID(int=rng.getrandbits(128)))
        yield dlq_topic(settings.topic_objects), object_id, _letter("decode", object_id, None)


def _letter(stage: str, object_id: str, segment: str | None) -> DeadLetter:
    return DeadLetter(stage=stage, reason="timeout", kind="permanent", error_class="E", message="bench",
                      attempts=1, source_topic="t", partition=0, offset=0, payload=b"{}", object_id=object_id,
                      segment_id=segment)  # fmt: skip


async def publish(settings: DecodeSettings, records: Iterator[tuple[str, str, Message]]) -> int:
    await ensure_topics(settings, REGISTRY.topics(settings))
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=20)
    await producer.start()
    published = 0
    try:
        while chunk := list(itertools.islice(records, 5000)):
            sent = [await producer.send(t, m.to_bytes(), key=k.encode()) for t, k, m in chunk]
            await asyncio.gather(*sent)
            published += len(chunk)
    finally:
        await producer.stop()
    return published


def run_child(tree: Path, env: dict[str, str]) -> dict[str, Any]:
    Redis.from_url(env["CAPSTREAM_REDIS_URL"]).flushdb()  # the bench's own redis-server: a wiped Redis
    proc = subprocess.run([sys.executable, "-c", CHILD], cwd=tree, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"reconcile in {tree} failed: {proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    if not str(result["module"]).startswith(str(tree)):
        raise RuntimeError(f"the child imported {result['module']}, not the tree {tree}")
    return result


def figures(result: dict[str, Any]) -> tuple[float, float]:
    """(peak RSS in MB, records/s) of one run."""
    c = result["counts"]
    records = c["segments"] + c["captions"] + c["embeddings"] + c["dead_letters"]
    return result["peak_rss_kb"] / 1024, records / result["seconds"]


def describe(name: str, result: dict[str, Any]) -> str:
    rss, rate = figures(result)
    return (
        f"{name}: peak_rss_mb={rss:.0f} (after imports {result['idle_rss_kb'] / 1024:.0f}) "
        f"seconds={result['seconds']:.1f} records_s={rate:.0f} counts={json.dumps(result['counts'])}"
    )


def archive(ref: str, into: Path) -> Path:
    blob = subprocess.run(["git", "archive", ref, "schemas", "workers"], cwd=ROOT, capture_output=True, check=True)
    with tarfile.open(fileobj=io.BytesIO(blob.stdout)) as tar:
        tar.extractall(into, filter="data")
    return into


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--segments", type=int, default=100_000)
    parser.add_argument("--per-object", type=int, default=20)
    parser.add_argument("--dim", type=int, default=384, help="embedding dimensions (Qwen3-Embedding: 1024-4096)")
    parser.add_argument("--before", metavar="REF", help="git ref of the baseline reconcile")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="reconcile-bench-") as tmp:
        data_dir = Path(tmp) / "stack"
        endpoints = start_stack(data_dir, s3_events=False)
        try:
            suffix = uuid.uuid4().hex[:8]
            env = {**os.environ, **endpoints.env(), "CAPSTREAM_KEY_PREFIX": "bench"}
            for name in ("OBJECTS", "SEGMENTS", "CAPTIONS", "EMBEDDINGS"):
                env[f"CAPSTREAM_TOPIC_{name}"] = f"bench-{name.lower()}-{suffix}"
            os.environ.update(env)
            settings = DecodeSettings()
            t0 = time.perf_counter()
            published = asyncio.run(publish(settings, history(settings, args.segments, args.per_object, args.dim)))
            print(f"published {published} records in {time.perf_counter() - t0:.0f} s", flush=True)
            before = run_child(archive(args.before, Path(tmp) / "before"), env) if args.before else None
            if before is not None:
                print(describe(f"before ({args.before})", before), flush=True)
            after = run_child(ROOT, env)
            print(describe("after", after), flush=True)
        finally:
            stop_stack(data_dir)
    rss, rate = figures(after)
    line = f"reconcile_bench: segments={args.segments} dim={args.dim} peak_rss_mb={rss:.0f} records_s={rate:.0f}"
    if before is not None:
        b_rss, b_rate = figures(before)
        line += f" before_peak_rss_mb={b_rss:.0f} before_records_s={b_rate:.0f}"
        line += f" ratio_peak_rss={rss / b_rss:.3f} ratio_records_s={rate / b_rate:.2f}"
        if before["counts"] != after["counts"]:
            print(f"counts differ: before {before['counts']} after {after['counts']}")
            print(line)
            return 1
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
