"""One chaos run: a private durable stack, one process per worker, objects submitted at a steady
rate while ``faults.Chaos`` kills and restarts things, then the verdict.

Order: start the stack and the workers (decode x2, one of every other stage the registry says
every deployment runs: caption, transcribe, embed, index), wait until every
worker has its engine loaded, submit the objects at ``--rate`` (so work stays in flight for
the kills), wait until every object is ``done`` or ``failed`` and the fault schedule is
through, let every consumer reach lag 0 with nothing in flight (so replayed records have been
turned away, or redone, before anything is counted), replay finished objects once more with
the model calls counted (``replay.quiet_replay``: must be 0), stop the workers with SIGTERM
(each process is scraped a last time first), read back everything and verify. Whether it
settled and how the workers exited go into the verdict (``conduct``), not only the report.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import structlog
from redis.asyncio import Redis

from loadtest.chaos.collect import collect
from loadtest.chaos.conduct import RunFacts
from loadtest.chaos.faults import Chaos
from loadtest.chaos.processes import Scraper, WorkerProc
from loadtest.chaos.replay import quiet_replay
from loadtest.chaos.verifier import MODEL_STAGES, TruthObject, Verdict, loops_of, verify
from loadtest.chaos.workload import MediaFile, make_media
from loadtest.loadrun.workers import wait_ready
from workers.cli.submit import Submitted, submit
from workers.localstack import start_stack, stop_stack
from workers.offline_profile import offline_env
from workers.settings import IndexSettings
from workers.stages import REGISTRY
from workers.state import ProgressStore, RedisKeys

log = structlog.get_logger("capstream.chaos")

STAGES = tuple(REGISTRY.required_names())  # the bridge is not in the chaos run: it submits events
PLAN = tuple((stage, n) for stage in STAGES for n in range(2 if stage == "decode" else 1))
SETTLE_S = 90.0
FINISHED_STATES = ("done", "failed")


async def submit_at_rate(
    files: list[MediaFile], rate: float, settings: IndexSettings, submitted: dict[str, Submitted]
) -> None:
    t0 = time.monotonic()
    for i, f in enumerate(files):
        await asyncio.sleep(max(0.0, t0 + i / rate - time.monotonic()))
        for _ in range(60):  # the broker may be restarting right now
            try:
                submitted[f.path.name] = (await submit([f.path], settings))[0]
                break
            except Exception as exc:  # noqa: BLE001 - any outage: try again
                log.warning("submit_retry", file=f.path.name, error=str(exc))
                await asyncio.sleep(1.0)
        else:
            raise RuntimeError(f"could not submit {f.path.name}")


async def _states(settings: IndexSettings, ids: list[str]) -> dict[str, str] | None:
    redis = Redis.from_url(settings.redis_url)
    try:
        store = ProgressStore(redis, RedisKeys(settings.key_prefix))
        return {oid: p.state.value if (p := await store.get(oid)) else "unknown" for oid in ids}
    except Exception:  # noqa: BLE001 - Redis restarting: ask again on the next tick
        return None
    finally:
        await redis.aclose()


async def settle(workers: list[WorkerProc]) -> bool:
    """Until every consumer is at lag 0 with nothing in flight, twice in a row."""
    deadline, quiet = time.monotonic() + SETTLE_S, 0
    while time.monotonic() < deadline:
        lag = sum(w.current_total("capstream_consumer_lag") for w in workers)
        in_flight = sum(w.in_flight() for w in workers)
        quiet = quiet + 1 if lag == 0 and in_flight == 0 and all(w.ready for w in workers) else 0
        if quiet >= 2:
            return True
        await asyncio.sleep(1.0)
    return False


def stage_total(workers: list[WorkerProc], name: str, stage: str, **labels: str) -> int:
    """A counter of one stage (all its consumer loops), summed over every incarnation of every
    worker (last scrapes)."""
    return int(sum(w.total(name, stage=loop, **labels) for w in workers for loop in loops_of(stage)))


def _event(settings: IndexSettings, sub: Submitted) -> tuple[bytes, bytes]:
    """The key and value ``capstream submit`` published the object's event with."""
    return f"{settings.s3_bucket}/{sub.key}".encode(), json.dumps(sub.event).encode()


def stop_all(workers: list[WorkerProc]) -> dict[str, int | None]:
    with ThreadPoolExecutor(max_workers=len(workers)) as pool:
        codes = list(pool.map(WorkerProc.stop, workers))
    return {w.name: code for w, code in zip(workers, codes, strict=True)}


async def run(args: Any) -> int:
    started = time.monotonic()
    deadline = started + args.seconds
    rng = random.Random(args.seed)
    data_dir = Path(tempfile.mkdtemp(prefix="capstream-chaos-"))
    files = make_media(data_dir / "media", args.objects, args.seed)
    endpoints = start_stack(data_dir / "stack", durable_kafka=True)
    os.environ.update(endpoints.env())
    env = {**os.environ, **offline_env(), "CAPSTREAM_SESSION_TIMEOUT_MS": "6000"}
    workers = [WorkerProc(stage, n, data_dir / "logs", env) for stage, n in PLAN]
    settings = IndexSettings()
    submitted: dict[str, Submitted] = {}
    scraper = Scraper(workers)
    ok = False
    try:
        for w in workers:
            w.start()
        processes = [w.current.process for w in workers]
        await asyncio.to_thread(wait_ready, processes, args.ready_timeout, settings.topic_partitions)
        log.info("workers_ready", seconds=round(time.monotonic() - started, 1))
        scraper.start()
        by_id = lambda: {s.object_id: s for s in submitted.values()}  # noqa: E731
        chaos = Chaos(
            endpoints,
            workers,
            env,
            settings,
            kill_target=args.kills,
            wipe_redis=args.wipe_redis,
            rng_uniform=rng.uniform,
            submitted_share=lambda: len(submitted) / len(files),
            object_ids=lambda: list(by_id()),
            event_of=lambda oid: _event(settings, by_id()[oid]),
        )
        finished = asyncio.Event()
        uploads = asyncio.create_task(submit_at_rate(files, args.rate, settings, submitted))
        faults = asyncio.create_task(chaos.run(finished))
        in_time = await _wait_finished(settings, files, submitted, uploads, faults, finished, deadline)
        facts = RunFacts(settled=await settle(workers) if in_time else False)
        if facts.settled:
            await quiet_replay(settings, workers, chaos.replay, lambda: settle(workers), facts)
        scraper.stop()
        facts.exit_codes = await asyncio.to_thread(stop_all, workers)
        truth = [
            TruthObject(f.path.name, submitted[f.path.name].object_id, f.poison, f.segments, f.tolerance_s, f.speech)
            for f in files
            if f.path.name in submitted
        ]
        seen = await collect(settings, [t.object_id for t in truth], env)
        seen.kills = chaos.faults.kills
        seen.injected = chaos.faults.injected
        seen.model_calls = {s: stage_total(workers, "capstream_model_requests_total", s) for s in MODEL_STAGES}
        seen.run = facts
        verdict = verify(truth, seen)
        report(verdict, chaos, workers, facts, in_time, started)
        ok = in_time and verdict.passed
    finally:
        for w in workers:
            if w.alive():
                w.kill9()
        stop_stack(data_dir / "stack")
        if ok and not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)
        else:
            print(f"chaos: data and logs kept in {data_dir}", file=sys.stderr)
    return 0 if ok else 1


async def _wait_finished(
    settings: IndexSettings,
    files: list[MediaFile],
    submitted: dict[str, Submitted],
    uploads: asyncio.Task[None],
    faults: asyncio.Task[None],
    finished: asyncio.Event,
    deadline: float,
) -> bool:
    """Until every object is done or failed and the fault schedule is through; False at the deadline."""
    try:
        while time.monotonic() < deadline:
            for task in (uploads, faults):
                if task.done() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            if uploads.done():
                states = await _states(settings, [s.object_id for s in submitted.values()])
                if states is not None and all(s in FINISHED_STATES for s in states.values()):
                    finished.set()  # no more faults: nothing left in flight to hit
                    if faults.done():
                        return True
            await asyncio.sleep(1.0)
        return False
    finally:
        finished.set()
        uploads.cancel()
        faults.cancel()


def report(
    v: Verdict,
    chaos: Chaos,
    workers: list[WorkerProc],
    facts: RunFacts,
    in_time: bool,
    started: float,
) -> None:
    f = chaos.faults
    for line in f.events:
        print(line)
    for problem in v.run_problems + v.problems[:50]:
        print(f"problem: {problem}")
    for stage in STAGES:
        print(
            f"stage {stage}: kills={f.kills_by_stage[stage]} in_flight_at_kills={v.bound_by_stage.get(stage, 0)} "
            f"bound={v.bound(stage)} duplicate_outputs={v.duplicates_by_stage.get(stage, 0)} "
            f"redone_work={v.redone_by_stage.get(stage, '-')} "
            f"model_calls={stage_total(workers, 'capstream_model_requests_total', stage)} "
            f"outputs_counted={stage_total(workers, 'capstream_output_records_total', stage)} "
            f"skipped_duplicates={stage_total(workers, 'capstream_records_total', stage, outcome='duplicate')}"
        )
    print(
        f"elapsed={time.monotonic() - started:.0f}s finished_in_time={in_time} settled={facts.settled} "
        f"redecoded_objects={v.redecoded_objects} replayed_objects={f.replayed_objects} "
        f"max_prekill_gap_ms={f.max_gap_ms:.1f} prekill_scrape_failures={f.prekill_scrape_failures} "
        f"reconcile={f.reconcile} exit_codes={facts.exit_codes} bounds_exceeded={v.bounds_exceeded}"
    )
    print(
        f"quiet replay: records={facts.replay_records} consumed={facts.replay_consumed} "
        f"model_calls={facts.replay_model_calls} unscraped={list(facts.replay_unscraped)}"
    )
    print(
        f"chaos: objects={v.objects} segments={v.segments} speech_chunks={v.speech_chunks} kills={f.worker_kills} "
        f"inflight_kills={f.inflight_kills} restarts={f.restarts} lost={v.lost} "
        f"duplicate_outputs={v.duplicate_outputs} redone_work={v.redone_work} boundary_errors={v.boundary_errors}"
    )
