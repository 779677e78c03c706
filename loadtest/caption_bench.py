"""The caption stage against the bare engine, and the stage's cost outside the model.

- ``BareEngine``: ``vllm.LLM.chat`` of a set of segments' messages in ONE call, built with the
  worker's own engine arguments (``VllmCaptionBackend.engine_defaults`` merged with
  ``CAPSTREAM_CAPTION_ENGINE_ARGS``) and sampling settings.
- ``stage_run``: the same number of fresh segments through a real ``capstream worker caption``
  process. The segments topic is filled first (a backlog, as when decode runs ahead), then the
  worker starts; the clock runs from its partition assignment (logged after its engine has
  loaded, before its first fetch) to the broker timestamp of its last caption. Its
  ``/metrics`` say how many engine calls it made and of what sizes.
- ``overhead_run``: the caption stage in this process with an instant backend, on the real
  broker and Redis: everything a segment costs besides the model (fetch, JSON and base64
  decoding, frame check, message building, Redis done markers, producing and awaiting the
  caption's ack), timed per segment from ``parse`` to ``delivered``.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from redis.asyncio import Redis

from loadtest.bench_kafka import Placed, create_topics, fresh_name, produce_placed, read_until
from loadtest.bench_stats import histogram_counts, histogram_totals, percentile
from loadtest.worker_process import WorkerProcess, event_time
from schemas.segments import SegmentBatch
from workers.caption.backend import CaptionResult, VllmCaptionBackend
from workers.caption.prompt import ChatMessages, build_caption_messages
from workers.caption.stage import CaptionStage
from workers.localstack import StackEndpoints
from workers.runtime.engine_args import engine_kwargs
from workers.runtime.loop import StageLoop
from workers.runtime.metrics import WorkerMetrics, total
from workers.runtime.stage import RecordContext
from workers.settings import CaptionSettings

BATCH = "capstream_engine_batch_size"


def caption_engine_kwargs(settings: CaptionSettings) -> dict[str, Any]:
    """The worker's ``vllm.LLM`` kwargs. ``engine_defaults`` reads only the settings, so it is
    called with a stand-in for the backend: building a real one would start its engine thread
    and batcher, which the bare engine must not have."""
    defaults = VllmCaptionBackend.engine_defaults(SimpleNamespace(_settings=settings))  # type: ignore[arg-type]
    return engine_kwargs(settings.caption_engine_args, defaults)


def placed_segments(segments: list[SegmentBatch], partitions: int) -> list[Placed]:
    """Each object's segments on one partition (decode keys them by object id), objects
    spread round-robin over the partitions."""
    objects = list(dict.fromkeys(s.object_id for s in segments))
    return [Placed(objects.index(s.object_id) % partitions, s.object_id.encode(), s.to_bytes()) for s in segments]


@dataclass
class CaptionRun:
    side: str  # "engine" or "stage"
    seed: int
    segments: int
    wall_s: float
    completion_tokens: int
    engine_calls: int | None = None  # observations of capstream_engine_batch_size: engine calls or steps
    batch_sizes: dict[str, int] = field(default_factory=dict)
    model_requests: int | None = None
    mean_processing_s: float | None = None
    load_avg: float = 0.0
    # CPU seconds of the engine's process (all threads) over the run: unlike wall time, it
    # barely moves when other tenants of the machine take cores away.
    cpu_s: float = 0.0

    @property
    def segments_per_s(self) -> float:
        return self.segments / self.wall_s


class BareEngine:
    def __init__(self, settings: CaptionSettings) -> None:
        from vllm import LLM, SamplingParams

        self.settings = settings
        self.kwargs = caption_engine_kwargs(settings)
        self.llm: Any = LLM(model=settings.caption_model, **self.kwargs)  # as the backend holds it
        self.sampling = SamplingParams(max_tokens=settings.caption_max_tokens, temperature=settings.caption_temperature)

    def run(self, seed: int, segments: list[SegmentBatch]) -> CaptionRun:
        messages: list[ChatMessages] = [build_caption_messages(s, self.settings.caption_prompt) for s in segments]
        load = os.getloadavg()[0]
        cpu, started = time.process_time(), time.perf_counter()
        outputs = self.llm.chat(messages, self.sampling, use_tqdm=False)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
        return CaptionRun("engine", seed, len(segments), wall, tokens, load_avg=load, cpu_s=cpu)


async def stage_run(
    stack: StackEndpoints, base_env: dict[str, str], seed: int, segments: list[SegmentBatch], run_dir: Path
) -> CaptionRun:
    seg_topic, cap_topic, group = fresh_name("segments"), fresh_name("captions"), fresh_name("caption")
    env = {
        **base_env,
        "CAPSTREAM_TOPIC_SEGMENTS": seg_topic,
        "CAPSTREAM_TOPIC_CAPTIONS": cap_topic,
        "CAPSTREAM_CAPTION_GROUP": group,
        "CAPSTREAM_KEY_PREFIX": f"bench{uuid.uuid4().hex[:8]}",
    }
    settings = CaptionSettings(kafka_bootstrap=stack.kafka_bootstrap)
    await create_topics(settings, [seg_topic, cap_topic])
    await produce_placed(
        stack.kafka_bootstrap, seg_topic, placed_segments(segments, settings.topic_partitions), 16 * 1024 * 1024
    )
    load = os.getloadavg()[0]
    worker = WorkerProcess("caption", 0, run_dir / f"caption-{seed}.log").start(env)
    try:
        while worker.assignment() is None:  # the engine loads first: its CPU is not the run's
            worker.check_alive()
            await asyncio.sleep(0.05)
        cpu = worker.cpu_seconds()
        captions = await read_until(stack.kafka_bootstrap, cap_topic, len(segments), 900, worker.check_alive)
        cpu = worker.cpu_seconds() - cpu
        assigned = worker.events("partitions_assigned")
        samples = worker.scrape()
    finally:
        worker.stop()
    wall = max(r.timestamp for r in captions) / 1000 - event_time(assigned[0])
    calls, _ = histogram_totals(samples, "capstream_engine_batch_size", stage="caption")
    processed, processing_s = histogram_totals(samples, "capstream_record_processing_seconds", stage="caption")
    return CaptionRun(
        "stage",
        seed,
        len(segments),
        wall,
        round(total(samples, "capstream_tokens_total", stage="caption", kind="completion")),
        engine_calls=calls,
        batch_sizes=histogram_counts(samples, "capstream_engine_batch_size", stage="caption"),
        model_requests=round(total(samples, "capstream_model_requests_total", stage="caption")),
        mean_processing_s=processing_s / processed if processed else None,
        load_avg=load,
        cpu_s=cpu,
    )


class WarmCaptionWorker:
    """One ``capstream worker caption`` kept for every stage run of the bench.

    Its engine loads once (minutes on a busy 2-core machine), so a stage run follows its
    engine run by seconds instead of minutes, and both meet the same load. Each run produces
    its segments into the topic the idle worker polls, as one burst, and the clock runs from
    the first send to the broker timestamp of the run's last caption: the worker takes the
    records as fetches bring them, as in production when decode runs ahead.
    """

    def __init__(self, stack: StackEndpoints, base_env: dict[str, str], run_dir: Path) -> None:
        self.stack = stack
        self.seg_topic, self.cap_topic = fresh_name("segments"), fresh_name("captions")
        self.env = {
            **base_env,
            "CAPSTREAM_TOPIC_SEGMENTS": self.seg_topic,
            "CAPSTREAM_TOPIC_CAPTIONS": self.cap_topic,
            "CAPSTREAM_CAPTION_GROUP": fresh_name("caption"),
            "CAPSTREAM_KEY_PREFIX": f"bench{uuid.uuid4().hex[:8]}",
        }
        self.settings = CaptionSettings(kafka_bootstrap=stack.kafka_bootstrap)
        self.run_dir = run_dir
        self.produced = 0
        self.worker: WorkerProcess | None = None

    async def start(self) -> None:
        await create_topics(self.settings, [self.seg_topic, self.cap_topic])
        self.worker = WorkerProcess("caption", 0, self.run_dir / "caption-warm.log").start(self.env)
        want = {f"{self.seg_topic}/{p}" for p in range(self.settings.topic_partitions)}
        deadline = time.monotonic() + 900
        while set(self.worker.assignment() or []) != want:
            self.worker.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError("caption worker never took its partitions")
            await asyncio.sleep(0.1)

    async def run(self, seed: int, segments: list[SegmentBatch]) -> CaptionRun:
        worker = self.worker
        assert worker is not None, "start() first"
        before, cpu = worker.scrape(), worker.cpu_seconds()
        load = os.getloadavg()[0]
        started = time.time()
        placed = placed_segments(segments, self.settings.topic_partitions)
        await produce_placed(self.stack.kafka_bootstrap, self.seg_topic, placed, 16 * 1024 * 1024)
        self.produced += len(segments)
        records = await read_until(self.stack.kafka_bootstrap, self.cap_topic, self.produced, 900, worker.check_alive)
        cpu = worker.cpu_seconds() - cpu
        ids = {s.segment_id for s in segments}
        mine = [r for r in records if json.loads(r.value or b"{}").get("segment_id") in ids]
        after = worker.scrape()
        steps = histogram_totals(after, BATCH, stage="caption")[0] - histogram_totals(before, BATCH, stage="caption")[0]
        sizes_after = histogram_counts(after, BATCH, stage="caption")
        sizes_before = histogram_counts(before, BATCH, stage="caption")
        completion = [total(x, "capstream_tokens_total", stage="caption", kind="completion") for x in (before, after)]
        requests = [total(x, "capstream_model_requests_total", stage="caption") for x in (before, after)]
        return CaptionRun(
            "stage",
            seed,
            len(segments),
            max(r.timestamp for r in mine) / 1000 - started,
            round(completion[1] - completion[0]),
            engine_calls=steps,
            batch_sizes={k: v - sizes_before.get(k, 0) for k, v in sizes_after.items() if v > sizes_before.get(k, 0)},
            model_requests=round(requests[1] - requests[0]),
            load_avg=load,
            cpu_s=cpu,
        )

    def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop()


class InstantCaptionBackend:
    """Answers at once: what is left of a segment's time is the stage's own."""

    name = "vllm"
    model = "instant"

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def caption(self, messages: ChatMessages) -> CaptionResult:
        return CaptionResult(text="instant", prompt_tokens=1, completion_tokens=1, latency_s=0.0)


class TimedCaptionStage(CaptionStage):
    """The caption stage, stamping each segment when parsing starts and once it is delivered."""

    def __init__(self, settings: CaptionSettings, redis: Redis) -> None:
        super().__init__(settings, redis, InstantCaptionBackend())
        self.started: dict[str, float] = {}
        self.finished: dict[str, float] = {}

    def parse(self, value: bytes) -> SegmentBatch:
        began = time.perf_counter()
        item = super().parse(value)
        self.started.setdefault(item.segment_id, began)
        return item

    async def delivered(self, item: SegmentBatch, ctx: RecordContext) -> None:
        await super().delivered(item, ctx)
        self.finished[item.segment_id] = time.perf_counter()


@dataclass
class OverheadRun:
    max_in_flight: int
    segments: int
    wall_s: float
    per_segment_ms: list[float]
    cpu_s: float  # this process's CPU time over the run: the stage's own work, minus waits
    load_avg: float

    @property
    def p50_ms(self) -> float:
        return percentile(self.per_segment_ms, 50)

    @property
    def p95_ms(self) -> float:
        return percentile(self.per_segment_ms, 95)

    @property
    def amortized_ms(self) -> float:
        return self.wall_s / self.segments * 1000

    @property
    def cpu_ms(self) -> float:
        return self.cpu_s / self.segments * 1000


async def overhead_run(stack: StackEndpoints, segments: list[SegmentBatch], max_in_flight: int) -> OverheadRun:
    seg_topic, cap_topic = fresh_name("segments"), fresh_name("captions")
    settings = CaptionSettings(
        kafka_bootstrap=stack.kafka_bootstrap,
        redis_url=stack.redis_url,
        topic_segments=seg_topic,
        topic_captions=cap_topic,
        key_prefix=f"bench{uuid.uuid4().hex[:8]}",
    )
    await create_topics(settings, [seg_topic, cap_topic])
    await produce_placed(
        stack.kafka_bootstrap, seg_topic, placed_segments(segments, settings.topic_partitions), 16 * 1024 * 1024
    )
    redis = Redis.from_url(stack.redis_url)
    stage = TimedCaptionStage(settings, redis)
    loop = StageLoop(stage, settings, fresh_name("overhead"), max_in_flight, WorkerMetrics())
    stop = asyncio.Event()
    load = os.getloadavg()[0]
    cpu = time.process_time()
    task = asyncio.create_task(loop.run(stop))
    try:
        deadline = time.monotonic() + 300
        while len(stage.finished) < len(segments):
            if task.done():
                task.result()
                raise RuntimeError("overhead loop stopped early")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(stage.finished)} of {len(segments)} segments after 300 s")
            await asyncio.sleep(0.01)
        cpu = time.process_time() - cpu
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
        await redis.aclose()
    per_segment = [(stage.finished[s] - stage.started[s]) * 1000 for s in stage.finished]
    wall = max(stage.finished.values()) - min(stage.started.values())
    return OverheadRun(max_in_flight, len(segments), wall, per_segment, cpu, load)
