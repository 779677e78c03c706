"""Chaos run: crash workers, restart Redis and the broker while objects flow; prove nothing is
lost and nothing is duplicated.

    python loadtest/chaos.py [--objects N] [--seconds S] [--seed N] [--keep]

Starts a private stack with a durable broker (Tansu on SeaweedFS), one worker process per
stage (`capstream worker X --offline`, a second decode worker to exercise rebalancing),
submits N objects (videos, images and ~10% poison files), and during the first half of the
run `kill -9`s random workers (restarting each at once), restarts Redis once (SIGTERM, so
its append-only file is flushed) and kills -9 the broker once. Then it compares the output
topics and Redis against ground truth computed locally from the same files:

- lost: a good segment with no embedding record, or a good object not `done`;
- duplicates: a segment with two or more *different* caption or embedding records (different
  ids or content; embeddings compared at cosine >= 0.9999), a progress counter above
  segments_total, or a poison object with other than exactly one dead letter;
- redeliveries: identical repeats, expected under at-least-once.

The last line is `chaos: objects=N segments=N kills=N restarts=N lost=N duplicates=N`; the exit
status is non-zero if lost or duplicates is above zero, or if the run hit its time bound.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from redis.asyncio import Redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from schemas.captions import Caption  # noqa: E402
from schemas.dead_letter import DeadLetter  # noqa: E402
from schemas.embeddings import Embedding  # noqa: E402
from schemas.ids import segment_id  # noqa: E402
from schemas.progress import ObjectProgress, ObjectState  # noqa: E402
from tests.media_factory import (  # noqa: E402
    make_corrupt_file,
    make_image,
    make_montage_video,
    make_short_clip,
    photos,
)
from workers.cli.submit import submit  # noqa: E402
from workers.cli.worker_process import spawn_worker, stop_worker  # noqa: E402
from workers.decode.segmenter import decode_segments  # noqa: E402
from workers.decode.stage import segment_policy  # noqa: E402
from workers.localstack import (  # noqa: E402
    Service,
    StackEndpoints,
    kill_service,
    start_service,
    start_stack,
    stop_stack,
)
from workers.offline_profile import offline_env  # noqa: E402
from workers.runtime.kafka import dlq_topic, read_topics  # noqa: E402
from workers.runtime.logging import configure_logging  # noqa: E402
from workers.settings import DecodeSettings, S3Settings  # noqa: E402
from workers.state import ProgressStore, RedisKeys, ResultStore  # noqa: E402

STAGE_PROCESSES = ("decode", "decode", "caption", "embed")


@dataclass
class WorkerProc:
    stage: str
    log_path: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = spawn_worker(["worker", self.stage, "--offline"], self.env, self.log_path)

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None:
            stop_worker(self.proc)


@dataclass
class Counts:
    kills: int = 0
    restarts: int = 0
    events: list[str] = field(default_factory=list)


def make_media(media_dir: Path, n: int, rng: random.Random) -> tuple[list[Path], set[str]]:
    """N files: ~10% poison, the rest a mix of montages, clips and stills. Returns paths and poison names."""
    media_dir.mkdir(parents=True, exist_ok=True)
    pics = photos(6)
    paths: list[Path] = []
    poison: set[str] = set()
    n_poison = max(1, round(n * 0.1))
    for i in range(n):
        if i < n_poison:
            path = media_dir / f"poison-{i:03d}.mp4"
            make_corrupt_file(path, kind="garbage" if i % 2 == 0 else "truncated")
            poison.add(path.name)
        elif i % 3 == 0:
            path = media_dir / f"still-{i:03d}.jpg"
            make_image(path, "JPEG", name=rng.choice(["astronaut", "coffee", "chelsea", "rocket"]))
        elif i % 3 == 1:
            path = media_dir / f"montage-{i:03d}.mp4"
            make_montage_video(path, rng.sample(pics, 2), seconds_each=1.5, size=(192, 144))
        else:
            path = media_dir / f"clip-{i:03d}.mp4"
            make_short_clip(path, seconds=1.0, size=(192, 144))
        paths.append(path)
    rng.shuffle(paths)
    return paths, poison


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a) * sum(y * y for y in b)) or 1.0)


async def wait_all(store: ProgressStore, ids: list[str], deadline: float, counts: Counts) -> bool:
    """Until every object finished and both service restarts have happened (or the deadline)."""
    while time.monotonic() < deadline:
        states = [await _progress(store, i) for i in ids]
        if counts.restarts >= 2 and all(p is not None and p.finished for p in states):
            return True
        await asyncio.sleep(1.0)
    return False


async def _progress(store: ProgressStore, object_id: str) -> ObjectProgress | None:
    for _ in range(30):  # Redis may be restarting right now
        try:
            return await store.get(object_id)
        except Exception:
            await asyncio.sleep(1.0)
    raise RuntimeError("Redis did not come back")


async def run_chaos(
    endpoints: StackEndpoints,
    workers: list[WorkerProc],
    chaos_s: float,
    rng: random.Random,
    counts: Counts,
) -> StackEndpoints:
    """Kill random workers every few seconds; restart Redis and the broker once each, early
    enough that objects are still in flight."""
    start = time.monotonic()
    redis_done = broker_done = False
    while time.monotonic() - start < chaos_s:
        await asyncio.sleep(rng.uniform(4.0, 9.0))
        elapsed = time.monotonic() - start
        victim = rng.choice(workers)
        victim.kill9()
        victim.start()
        counts.kills += 1
        counts.events.append(f"{elapsed:6.1f}s kill -9 {victim.stage}")
        if not redis_done and elapsed > min(chaos_s / 3, 15.0):
            endpoints = await _restart(endpoints, "redis", signal.SIGTERM)
            redis_done = True
            counts.events.append(f"{elapsed:6.1f}s restart redis")
            counts.restarts += 1
        if not broker_done and elapsed > min(2 * chaos_s / 3, 30.0):
            endpoints = await _restart(endpoints, "kafka", signal.SIGKILL)
            broker_done = True
            counts.events.append(f"{elapsed:6.1f}s kill -9 + restart broker")
            counts.restarts += 1
    return endpoints


async def _restart(endpoints: StackEndpoints, service: Service, sig: signal.Signals) -> StackEndpoints:
    kill_service(endpoints, service, sig=sig)
    await asyncio.sleep(1.0)
    return await asyncio.to_thread(start_service, endpoints, service)


def expected_segments(paths: list[Path], poison: set[str]) -> dict[str, int]:
    """Ground truth: how many segments each good file yields under the workers' policy."""
    policy = segment_policy(DecodeSettings())
    return {p.name: sum(1 for _ in decode_segments(str(p), policy)) for p in paths if p.name not in poison}


async def verify(
    settings: S3Settings, submitted: dict[str, str], poison: set[str], expected: dict[str, int]
) -> dict[str, int]:
    bootstrap = settings.kafka_bootstrap
    captions = [
        Caption.model_validate_json(r.value or b"") for r in await read_topics(bootstrap, [settings.topic_captions])
    ]
    embeddings = [
        Embedding.model_validate_json(r.value or b"") for r in await read_topics(bootstrap, [settings.topic_embeddings])
    ]
    letters = [
        DeadLetter.model_validate_json(r.value or b"")
        for r in await read_topics(bootstrap, [dlq_topic(settings.topic_objects)])
    ]
    caps_by_seg: dict[str, list[Caption]] = defaultdict(list)
    for c in captions:
        caps_by_seg[c.segment_id].append(c)
    embs_by_seg: dict[str, list[Embedding]] = defaultdict(list)
    for e in embeddings:
        embs_by_seg[e.segment_id].append(e)

    redis = Redis.from_url(settings.redis_url)
    keys = RedisKeys(settings.key_prefix)
    store, results = ProgressStore(redis, keys), ResultStore(redis, keys)
    lost = duplicates = redeliveries = segments = 0
    try:
        for name, object_id in submitted.items():
            progress = await store.get(object_id)
            if name in poison:
                mine = [d for d in letters if d.object_id == object_id]
                if progress is None or progress.state is not ObjectState.FAILED:
                    lost += 1
                    print(f"poison {name} not failed: {progress}")
                if len(mine) != 1:
                    duplicates += 1
                    print(f"poison {name} has {len(mine)} dead letters")
                continue
            if progress is None or progress.state is not ObjectState.DONE:
                lost += 1
                print(f"object {name} not done: {progress}")
            total = progress.segments_total if progress else None
            if progress and total is not None and max(progress.decoded, progress.captioned, progress.embedded) > total:
                duplicates += 1
                print(f"object {name} counters above total: {progress}")
            if total is not None and total != expected[name]:
                lost += abs(expected[name] - total)
                print(f"object {name}: {total} segments, ground truth {expected[name]}")
            rows = await results.get(object_id)
            if len(rows) != len({r.segment_id for r in rows}):
                duplicates += 1
            for index in range(expected[name]):
                sid = segment_id(object_id, index)
                segments += 1
                caps, embs = caps_by_seg.get(sid, []), embs_by_seg.get(sid, [])
                if not embs:
                    lost += 1
                    print(f"segment {name}#{index} has no embedding")
                    continue
                if len({c.text for c in caps}) > 1 or len({e.embedding_id for e in embs}) > 1:
                    duplicates += 1
                    print(f"segment {name}#{index}: {len(caps)} captions {len({c.text for c in caps})} distinct")
                elif any(_cosine(embs[0].vector, e.vector) < 0.9999 for e in embs[1:]):
                    duplicates += 1
                    print(f"segment {name}#{index}: embeddings differ")
                redeliveries += len(caps) - 1 + len(embs) - 1
    finally:
        await redis.aclose()
    return {"segments": segments, "lost": lost, "duplicates": duplicates, "redeliveries": redeliveries}


async def main_async(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    data_dir = Path(tempfile.mkdtemp(prefix="capstream-chaos-"))
    started = time.monotonic()
    paths, poison = make_media(data_dir / "media", args.objects, rng)
    expected = expected_segments(paths, poison)
    endpoints = start_stack(data_dir / "stack", durable_kafka=True)
    env = {**os.environ, **endpoints.env(), **offline_env(), "CAPSTREAM_SESSION_TIMEOUT_MS": "6000"}
    os.environ.update(endpoints.env())
    logs = data_dir / "logs"
    logs.mkdir()
    workers = [WorkerProc(stage, logs / f"{stage}-{i}.log", env) for i, stage in enumerate(STAGE_PROCESSES)]
    for w in workers:
        w.start()
    counts = Counts()
    ok = False
    try:
        settings = S3Settings()
        submitted = {Path(s.name).name: s.object_id for s in await submit(paths, settings)}
        redis = Redis.from_url(settings.redis_url)
        store = ProgressStore(redis, RedisKeys(settings.key_prefix))
        chaos = asyncio.create_task(run_chaos(endpoints, workers, args.seconds / 2, rng, counts))
        finished = await wait_all(store, list(submitted.values()), started + args.seconds, counts)
        chaos.cancel()
        await redis.aclose()
        for w in workers:
            w.stop()
        figures = await verify(settings, submitted, poison, expected)
        for line in counts.events:
            print(line)
        print(
            f"elapsed={time.monotonic() - started:.0f}s finished_in_time={finished} "
            f"redeliveries={figures['redeliveries']} poison={len(poison)}"
        )
        print(
            f"chaos: objects={len(submitted)} segments={figures['segments']} kills={counts.kills} "
            f"restarts={counts.restarts} lost={figures['lost']} duplicates={figures['duplicates']}"
        )
        ok = finished and figures["lost"] == 0 and figures["duplicates"] == 0
    finally:
        for w in workers:
            w.kill9()
        stop_stack(data_dir / "stack")
        if ok and not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
        else:
            print(f"chaos: data and logs kept in {data_dir}", file=sys.stderr)
    return 0 if ok else 1


def main() -> int:
    configure_logging("INFO", "console")  # logs to stderr: stdout ends with the figures line
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=600.0, help="bound on the whole run")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep data and logs even on success")
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
