"""What the chaos run does to the pipeline while objects flow.

- Worker kills: every few seconds, a worker whose last scrape shows records in flight
  (``capstream_records_in_flight > 0``), and that has finished a record since it last
  started, gets ``kill -9`` right after one more scrape, and is started again at once.
  When that scrape fails, the worker is not killed and the failure is reported (an older
  scrape's count would be a guess).
  Among the candidates, the stage killed least so far goes first, so every stage (the index
  too) is hit. When that pre-kill scrape shows nothing in flight (the work finished in
  between, common on an idle machine: a CI run once got 0 in-flight kills of 4), the worker is
  not killed and the next pass picks again.
- Services, each once and each while segments are in flight: Redis restarted with SIGTERM
  (it writes its append-only file), the broker killed with -9 and restarted, and Redis killed
  with -9 and restarted. Before the Redis kill -9 every worker is scraped, then again at least
  ``AOF_LOSS_S`` later, right before the signal: the records finished in between may have lost
  their markers (appendfsync everysec), and count towards the kill's bound. Every scrape for a
  service kill that fails is recorded with the kill, which fails the verdict
  (``--wipe-redis``: Redis is restarted with its data files deleted, then
  ``capstream reconcile`` runs as soon as it answers; no worker is killed from just before the
  wipe until the reconcile is done and every worker is up, so the only help Redis gets is the
  reconcile).
- Replays (what at-least-once delivery upstream looks like): for ~10% of the objects already
  ``done``, the run re-publishes the object's event, and every record of it on the segments,
  speech, captions, transcripts and embeddings topics. The decode claim and the model stages'
  done markers must turn all of them away: no model call, no new output. In the wipe variant the objects are
  ones that were done before the wipe: their markers are back only through the reconcile.
  The run replays once more when it is quiet (``replay.quiet_replay``), with the model calls
  counted.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from redis.asyncio import Redis

from loadtest.chaos.conduct import AOF_LOSS_S, REDIS_KILL, Kill
from loadtest.chaos.processes import WorkerProc
from loadtest.chaos.replay import TERMINAL_OUTCOMES, republish
from loadtest.chaos.verifier import MODEL_STAGES, loops_of
from workers.localstack import Service, StackEndpoints, kill_service, start_service
from workers.settings import S3Settings
from workers.stages import REGISTRY
from workers.state import ProgressStore, RedisKeys

log = structlog.get_logger("capstream.chaos")

# When each service fault comes, as a share of the objects submitted.
SERVICE_FAULTS = (("redis-sigterm", 0.2), ("broker-kill9", 0.4), ("redis-kill9", 0.6), ("replay", 0.75))
# A service fault waits this long for every worker to be up and segments in flight, then goes
# anyway (and says so): a caption engine restarted by a kill takes ~2 min on two shared cores.
IN_FLIGHT_WAIT_S = 300.0


@dataclass
class FaultLog:
    kills: list[Kill] = field(default_factory=list)  # worker kills and the broker's, with in-flight counts
    worker_kills: int = 0
    inflight_kills: int = 0
    restarts: int = 0  # Redis and broker restarts
    max_gap_ms: float = 0.0  # longest time between a pre-kill scrape and its kill -9
    events: list[str] = field(default_factory=list)
    injected: dict[str, Counter[str]] = field(default_factory=dict)  # stage -> segment_id -> copies
    replayed_objects: int = 0
    reconcile: dict[str, int] | None = None
    kills_by_stage: Counter[str] = field(default_factory=Counter)
    prekill_scrape_failures: int = 0  # worker kills not done: the scrape right before failed

    def note(self, started: float, text: str) -> None:
        self.events.append(f"{time.monotonic() - started:7.1f}s {text}")
        log.info("chaos_event", what=text)


@dataclass
class Chaos:
    endpoints: StackEndpoints
    workers: list[WorkerProc]
    env: dict[str, str]
    settings: S3Settings
    kill_target: int
    wipe_redis: bool
    rng_uniform: Callable[[float, float], float]
    submitted_share: Callable[[], float]
    object_ids: Callable[[], list[str]]  # the objects submitted so far
    event_of: Callable[[str], tuple[bytes, bytes]]  # object id -> (key, value) of its submitted event
    started: float = field(default_factory=time.monotonic)
    faults: FaultLog = field(default_factory=FaultLog)
    done_before_wipe: list[str] = field(default_factory=list)

    async def run(self, finished: asyncio.Event) -> None:
        pending = list(SERVICE_FAULTS)
        while not finished.is_set() and (pending or self.faults.worker_kills < self.kill_target):
            await asyncio.sleep(self.rng_uniform(1.5, 4.0))
            if pending and self.submitted_share() >= pending[0][1]:
                await self._service_fault(pending.pop(0)[0], finished)
            elif self.faults.worker_kills < self.kill_target:
                await asyncio.to_thread(self._kill_one)

    def _kill_one(self) -> None:
        # Only an incarnation that has finished a record since its start: killing a worker again
        # before it got anything done would only starve the pipeline (a caption engine takes
        # minutes to load on two shared cores).
        candidates = [
            w
            for w in self.workers
            if w.alive() and w.ready and w.in_flight() > 0 and w.current_total("capstream_records_total") >= 1
        ]
        if not candidates:
            return
        fewest = min(self.faults.kills_by_stage[w.stage] for w in candidates)
        victim = next(w for w in candidates if self.faults.kills_by_stage[w.stage] == fewest)
        pre = victim.kill9(only_in_flight=True)
        f = self.faults
        if pre.error is not None:
            f.prekill_scrape_failures += 1
            f.note(self.started, f"pre-kill scrape of {victim.name} failed ({pre.error}): not killed")
            return
        if not pre.killed or pre.in_flight is None:  # its work finished since: pick again later
            return
        in_flight, gap_ms = pre.in_flight, pre.gap_ms
        victim.start()
        f.worker_kills += 1
        f.kills_by_stage[victim.stage] += 1
        f.inflight_kills += in_flight > 0
        f.max_gap_ms = max(f.max_gap_ms, gap_ms)
        f.kills.append(Kill(victim.name, {victim.stage: in_flight}, time.monotonic() - self.started))
        f.note(self.started, f"kill -9 {victim.name} in_flight={in_flight} gap_ms={gap_ms:.1f}")

    async def _wait_in_flight(self, finished: asyncio.Event) -> dict[str, int]:
        """Until every worker is up and some model stage has segments in flight."""
        deadline = time.monotonic() + IN_FLIGHT_WAIT_S
        while True:
            in_flight: Counter[str] = Counter()
            for w in self.workers:
                in_flight[w.stage] += w.in_flight()
            ready = all(w.ready for w in self.workers)
            busy = sum(in_flight[stage] for stage in MODEL_STAGES) > 0
            if (ready and busy) or finished.is_set() or time.monotonic() > deadline:
                if not busy:
                    self.faults.note(self.started, "no segments in flight for the next service fault")
                return dict(in_flight)
            await asyncio.sleep(0.2)

    async def _service_fault(self, fault: str, finished: asyncio.Event) -> None:
        if fault == "replay":
            await self._replay()
            return
        wiping = fault == "redis-kill9" and self.wipe_redis
        in_flight = await self._wait_in_flight(finished)
        if fault == "redis-sigterm":
            await self._restart("redis", signal.SIGTERM)
            self.faults.note(self.started, f"redis SIGTERM + restart, in flight {in_flight}")
        elif fault == "broker-kill9":
            unscraped = self._scrape_all()  # the in-flight counts this kill is allowed to cost
            at_kill = self._stage_sums(lambda w: w.in_flight())
            self.faults.kills.append(Kill("broker", at_kill, time.monotonic() - self.started, unscraped=unscraped))
            await self._restart("kafka", signal.SIGKILL)
            self.faults.note(self.started, f"broker kill -9 + restart, in flight {at_kill} unscraped {unscraped}")
        elif wiping:
            self.done_before_wipe = await self._done_objects()
            await self._restart("redis", signal.SIGKILL, wipe=True)
            self.faults.reconcile = await self._reconcile()
            self.faults.note(self.started, f"redis kill -9, data wiped, restart, reconcile {self.faults.reconcile}")
        else:
            kill = await self._measure_redis_kill()
            self.faults.kills.append(kill)
            await self._restart("redis", signal.SIGKILL)
            self.faults.note(
                self.started,
                f"redis kill -9 + restart, in flight {kill.in_flight}, finished in the last "
                f"{kill.window_s:.2f}s {kill.finished} unscraped {kill.unscraped}",
            )

    def _scrape_all(self) -> tuple[str, ...]:
        """Fresh scrapes of every worker; the names of those whose scrape failed."""
        return tuple(w.name for w in self.workers if w.scrape_now() is not None)

    def _stage_sums(self, figure: Callable[[WorkerProc], float]) -> dict[str, int]:
        sums = Counter(dict.fromkeys(REGISTRY.required_names(), 0))
        for w in self.workers:
            sums[w.stage] += int(figure(w))
        return dict(sums)

    def _finished(self) -> dict[str, int]:
        """Per stage, records finished so far (every incarnation's last scrape)."""
        return self._stage_sums(
            lambda w: sum(
                w.total("capstream_records_total", stage=loop, outcome=o)
                for loop in loops_of(w.stage)
                for o in TERMINAL_OUTCOMES
            )
        )

    async def _measure_redis_kill(self) -> Kill:
        """What a Redis kill -9 may cost: scrape, wait ``AOF_LOSS_S``, scrape again right before
        the signal; the records finished in between (their markers may not be on disk) and
        those in flight then."""
        unscraped = set(self._scrape_all())
        before, since = self._finished(), time.monotonic()
        await asyncio.sleep(AOF_LOSS_S)
        unscraped |= set(self._scrape_all())
        after, in_flight = self._finished(), self._stage_sums(lambda w: w.in_flight())
        finished = {stage: after[stage] - before.get(stage, 0) for stage in after}
        return Kill(
            REDIS_KILL,
            in_flight,
            time.monotonic() - self.started,
            finished=finished,
            window_s=time.monotonic() - since,
            unscraped=tuple(sorted(unscraped)),
        )

    async def _restart(self, service: Service, sig: signal.Signals, wipe: bool = False) -> None:
        await asyncio.to_thread(kill_service, self.endpoints, service, sig=sig)
        if wipe:
            data = Path(self.endpoints.data_dir) / "redis"
            shutil.rmtree(data)
            data.mkdir()
        await asyncio.sleep(1.0)
        self.endpoints = await asyncio.to_thread(start_service, self.endpoints, service)
        self.faults.restarts += 1

    async def _reconcile(self) -> dict[str, int]:
        """``capstream reconcile --json`` with the stack's environment, as an operator would."""
        proc = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "workers.cli.main", "reconcile", "--json"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"capstream reconcile failed: {proc.stderr[-2000:]}")
        counts: dict[str, int] = json.loads(proc.stdout.strip().splitlines()[-1])
        return counts

    async def _done_objects(self) -> list[str]:
        redis = Redis.from_url(self.settings.redis_url)
        store = ProgressStore(redis, RedisKeys(self.settings.key_prefix))
        try:
            found = [(oid, await store.get(oid)) for oid in self.object_ids()]
        finally:
            await redis.aclose()
        return [oid for oid, p in found if p is not None and p.state.value == "done"]

    async def _replay(self) -> None:
        published = await self.replay()
        if not published:
            self.faults.note(self.started, "replay: no object done yet")
            return
        events = published.get(self.settings.topic_objects, 0)
        self.faults.note(
            self.started,
            f"replay: {events} objects' events and {sum(published.values()) - events} segment records again",
        )

    async def replay(self) -> dict[str, int]:
        """Re-publish ~10% of the finished objects (in the wipe variant, of those done before
        the wipe): their events and records; topic -> records published."""
        done = self.done_before_wipe if self.wipe_redis else await self._done_objects()
        chosen = done[: max(1, len(self.object_ids()) // 10)]
        if not chosen:
            return {}
        published = await republish(self.settings, chosen, self.event_of, self.faults.injected)
        self.faults.replayed_objects += len(chosen)
        return published
