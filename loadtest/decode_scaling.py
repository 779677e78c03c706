"""Decode throughput of one worker against two, pinned to a core each or left unpinned.

Each run gets fresh topics, a fresh consumer group and a fresh Redis key prefix, so the same
video files are new objects to it. The workers start first and the run waits until the group
has settled (every worker holds partitions, all are held): events produced into a backlog
would let the first worker take every partition and the second join by a rebalance that
waits for whole decodes to finish. Then one ``{"uri": "file://..."}`` event per object is
produced, round-robin over the partitions, and the clock runs from that moment to the broker
timestamp of the last segment, once every worker's ``/metrics`` count all objects done.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from loadtest.bench_kafka import Placed, create_topics, fresh_name, produce_placed
from loadtest.bench_stats import assignment_settled
from loadtest.worker_process import WorkerProcess
from workers.localstack import StackEndpoints
from workers.runtime.kafka import read_topics
from workers.runtime.metrics import total
from workers.settings import DecodeSettings


@dataclass
class DecodeRun:
    workers: int
    pinned: bool
    objects: int
    segments: int
    video_s: float
    wall_s: float
    cpu_s: list[float]  # per worker, over the run
    load_avg: float

    @property
    def objects_per_s(self) -> float:
        return self.objects / self.wall_s

    @property
    def video_s_per_s(self) -> float:
        return self.video_s / self.wall_s

    @property
    def cpu_s_per_video_s(self) -> float:
        return sum(self.cpu_s) / self.video_s

    @property
    def core_share(self) -> list[float]:
        """Fraction of one core each worker got over the run: below 1 when pinned, the core's
        other tenants (the machine is shared) took the rest."""
        return [c / self.wall_s for c in self.cpu_s]

    @property
    def config(self) -> str:
        return f"{self.workers} worker{'s' if self.workers > 1 else ''} {'pinned' if self.pinned else 'unpinned'}"


def object_links(video: Path, count: int, directory: Path) -> list[Path]:
    """``count`` names for one video file: distinct URIs, hence distinct objects."""
    directory.mkdir(parents=True, exist_ok=True)
    links = []
    for i in range(count):
        link = directory / f"object-{i}{video.suffix}"
        if not link.exists():
            os.link(video, link)
        links.append(link)
    return links


async def _wait_settled(workers: list[WorkerProcess], topic: str, partitions: int, timeout_s: float = 180.0) -> None:
    want = {f"{topic}/{p}" for p in range(partitions)}
    deadline = time.monotonic() + timeout_s
    while True:
        for w in workers:
            w.check_alive()
        if assignment_settled([w.assignment() for w in workers], want):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"group never settled: {[w.assignment() for w in workers]}")
        await asyncio.sleep(0.2)


def _done(workers: list[WorkerProcess]) -> tuple[float, float, float]:
    """(objects done, objects dead-lettered, video seconds) over every worker's /metrics."""
    done = dead = video = 0.0
    for w in workers:
        samples = w.scrape()
        done += total(samples, "capstream_records_total", stage="decode", outcome="done")
        dead += total(samples, "capstream_records_total", stage="decode", outcome="dead_lettered")
        video += total(samples, "capstream_video_seconds_decoded_total", stage="decode")
    return done, dead, video


async def decode_run(
    stack: StackEndpoints, base_env: dict[str, str], objects: list[Path], workers: int, pinned: bool, run_dir: Path
) -> DecodeRun:
    obj_topic, seg_topic = fresh_name("objects"), fresh_name("segments")
    env = {
        **base_env,
        "CAPSTREAM_ALLOWED_SCHEMES": "file",
        "CAPSTREAM_TOPIC_OBJECTS": obj_topic,
        "CAPSTREAM_TOPIC_SEGMENTS": seg_topic,
        "CAPSTREAM_DECODE_GROUP": fresh_name("decode"),
        "CAPSTREAM_KEY_PREFIX": f"bench{uuid.uuid4().hex[:8]}",
    }
    if pinned:
        env["CAPSTREAM_DECODE_THREADS"] = "1"
    settings = DecodeSettings(kafka_bootstrap=stack.kafka_bootstrap)
    partitions = settings.topic_partitions
    await create_topics(settings, [obj_topic, seg_topic])
    tag = f"{workers}{'p' if pinned else 'u'}-{uuid.uuid4().hex[:6]}"
    procs = [
        WorkerProcess("decode", i, run_dir / f"decode-{tag}-{i}.log").start(env, core=i if pinned else None)
        for i in range(workers)
    ]
    try:
        await _wait_settled(procs, obj_topic, partitions)
        events = [
            Placed(i % partitions, path.name.encode(), json.dumps({"uri": path.as_uri()}).encode())
            for i, path in enumerate(objects)
        ]
        cpu_before = [w.cpu_seconds() for w in procs]
        load = os.getloadavg()[0]
        started = time.time()
        await produce_placed(stack.kafka_bootstrap, obj_topic, events, 1024 * 1024)
        deadline = time.monotonic() + 1800
        while True:
            done, dead, video = _done(procs)
            if dead:
                raise RuntimeError(f"{dead:g} objects dead-lettered; logs in {run_dir}")
            if done >= len(objects):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{done:g} of {len(objects)} objects decoded after 1800 s")
            await asyncio.sleep(0.25)
        cpu = [w.cpu_seconds() - b for w, b in zip(procs, cpu_before, strict=True)]
    finally:
        for w in procs:
            w.stop()
    # Every segment was acknowledged before its object counted as done: all are in the topic.
    segments = await read_topics(stack.kafka_bootstrap, [seg_topic])
    wall = max(r.timestamp for r in segments) / 1000 - started
    return DecodeRun(workers, pinned, len(objects), len(segments), video, wall, cpu, load)
