"""Replays, as at-least-once delivery upstream would send them, and the quiet replay's count.

A replay re-publishes finished objects' events and every record of them on the segments,
speech, captions, transcripts and embeddings topics (``verifier.segment_topics``); the decode
claim and the model stages' done markers must turn all of them away. While kills land, a
replayed record's model call cannot be told apart from the kills' redone work in the metrics
(counters have no per-record label), so the run replays once more at the end, with every
consumer at lag 0 and no fault left: the model stages' model-call counters (caption,
transcribe, embed), summed over every worker, must not move while the replayed records are
taken and finished. Skipped-duplicate counters going up alone would not show that.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable

from aiokafka import AIOKafkaProducer
from pydantic import BaseModel, ConfigDict

from loadtest.chaos.conduct import RunFacts
from loadtest.chaos.processes import WorkerProc
from loadtest.chaos.verifier import MODEL_STAGES, loops_of, segment_topics
from workers.runtime.kafka import read_topics
from workers.settings import CommonSettings
from workers.stages import REGISTRY

# A record's way out of a stage that ends it (``retried`` does not).
TERMINAL_OUTCOMES = ("done", "duplicate", "stale", "filtered", "dead_lettered")
CONSUMED_WAIT_S = 180.0


class _Ref(BaseModel):
    model_config = ConfigDict(extra="ignore")
    object_id: str
    segment_id: str


async def republish(
    settings: CommonSettings,
    chosen: Iterable[str],
    event_of: Callable[[str], tuple[bytes, bytes]],
    injected: dict[str, Counter[str]],
) -> dict[str, int]:
    """Re-publish the chosen objects' events and each of their segments' records once per
    output topic; ``injected`` (stage -> segment id -> copies) counts the copies. Returns
    topic -> records published."""
    chosen = set(chosen)
    published: Counter[str] = Counter()
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all", max_request_size=4 << 20)
    await producer.start()
    try:
        for oid in chosen:
            key, value = event_of(oid)
            await producer.send_and_wait(settings.topic_objects, value, key=key)
            published[settings.topic_objects] += 1
        for stage, topic in segment_topics(settings):  # segments, speech, captions, transcripts, embeddings
            counter = injected.setdefault(stage, Counter())
            sent: set[str] = set()  # one copy per segment, however many the topic holds
            for record in await read_topics(settings.kafka_bootstrap, [topic]):
                ref = _Ref.model_validate_json(record.value or b"{}")
                if ref.object_id in chosen and ref.segment_id not in sent:
                    await producer.send_and_wait(topic, record.value, key=record.key)
                    sent.add(ref.segment_id)
                    counter[ref.segment_id] += 1
                    published[topic] += 1
    finally:
        await producer.stop()
    return dict(published)


def _finished(workers: list[WorkerProc], stage: str) -> int:
    return int(
        sum(w.total("capstream_records_total", stage=stage, outcome=o) for w in workers for o in TERMINAL_OUTCOMES)
    )


def _model_calls(workers: list[WorkerProc]) -> dict[str, int]:
    return {
        s: int(sum(w.total("capstream_model_requests_total", stage=loop) for w in workers for loop in loops_of(s)))
        for s in MODEL_STAGES
    }


def _consumers(settings: CommonSettings, published: dict[str, int]) -> dict[str, int]:
    """Consumer loop (its metrics' ``stage`` label) -> replayed records on its input topic."""
    want: Counter[str] = Counter()
    for spec in REGISTRY:
        for consumer in spec.consumers:
            want[consumer.name] += published.get(getattr(settings, consumer.topic_field, ""), 0)
    return {name: n for name, n in want.items() if n}


async def quiet_replay(
    settings: CommonSettings,
    workers: list[WorkerProc],
    replay: Callable[[], Awaitable[dict[str, int]]],
    settle: Callable[[], Awaitable[bool]],
    facts: RunFacts,
) -> None:
    """With the pipeline settled: fresh scrapes, ``replay()``, wait until every replayed record
    is finished by its stage, settle again, fresh scrapes; the model calls in between go to
    ``facts`` (each must be 0)."""
    failed = _scrape_all(workers)
    before = _model_calls(workers)
    loops = REGISTRY.consumer_names()
    consumed_before = {name: _finished(workers, name) for name in loops}
    published = await replay()
    facts.replay_records = sum(published.values())
    want = _consumers(settings, published)
    deadline = time.monotonic() + CONSUMED_WAIT_S
    while time.monotonic() < deadline:
        failed |= _scrape_all(workers)
        if all(_finished(workers, name) - consumed_before[name] >= n for name, n in want.items()):
            facts.replay_consumed = True
            break
        await asyncio.sleep(0.5)
    facts.settled = facts.settled and await settle()
    failed |= _scrape_all(workers)
    after = _model_calls(workers)
    facts.replay_model_calls = {s: after[s] - before[s] for s in MODEL_STAGES}
    facts.replay_unscraped = tuple(sorted(failed))  # a count from an older scrape could hide a call


def _scrape_all(workers: list[WorkerProc]) -> set[str]:
    """Fresh scrapes of every worker; the names of those whose scrape failed."""
    return {w.name for w in workers if w.scrape_now() is not None}
