"""The number of partitions caps a stage's parallelism: a consumer group hands each partition
to one member, so with P partitions and P+1 workers of one group, P of them get a partition
and process records and the extra one idles. This is why an autoscaler's max replicas is the
topic's partition count (docs/scaling.md).

Real broker, P+1 real ``StageLoop``s of one group in this process, a stage that only sleeps a
little so records overlap in time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition

from schemas.base import Message
from workers.localstack import StackEndpoints
from workers.runtime import loop as loop_module
from workers.runtime.kafka import dlq_topic, ensure_topics
from workers.runtime.loop import StageLoop
from workers.runtime.stage import Output, RecordContext, Stage
from workers.settings import CommonSettings

pytestmark = pytest.mark.integration

PARTITIONS = 2
RECORDS = 16
WORK_S = 0.25


class Job(Message):
    n: int


@dataclass
class Activity:
    """Which loops are processing a record right now, and the most at once."""

    active: dict[int, int] = field(default_factory=dict)  # loop index -> records in process
    processed: dict[int, int] = field(default_factory=dict)
    most_loops_at_once: int = 0

    def enter(self, worker: int) -> None:
        self.active[worker] = self.active.get(worker, 0) + 1
        self.most_loops_at_once = max(self.most_loops_at_once, sum(1 for v in self.active.values() if v))

    def leave(self, worker: int) -> None:
        self.active[worker] -= 1
        self.processed[worker] = self.processed.get(worker, 0) + 1


class SleepStage(Stage[Job]):
    name = "sleep"

    def __init__(self, worker: int, activity: Activity, in_topic: str, out_topic: str) -> None:
        self.worker = worker
        self.activity = activity
        self.input_topic = in_topic
        self.output_topics = (out_topic,)

    def parse(self, value: bytes) -> Job:
        return Job.model_validate_json(value)  # only this test produces to the topic

    async def process(self, item: Job, ctx: RecordContext) -> AsyncGenerator[Output, None]:
        self.activity.enter(self.worker)
        try:
            await asyncio.sleep(WORK_S)
        finally:
            self.activity.leave(self.worker)
        yield Output(self.output_topics[0], str(item.n), item)


async def _settled(
    assigned: dict[int, set[TopicPartition]], members: int, topic: str, partitions: int, quiet_s: float = 1.5
) -> None:
    """Until every member has had an assignment, the assignments split the topic's partitions
    between them without overlap, and no assignment changed for ``quiet_s``."""
    want = {TopicPartition(topic, p) for p in range(partitions)}
    loop = asyncio.get_running_loop()
    deadline, last, since = loop.time() + 60, None, loop.time()
    while True:
        snapshot = {k: frozenset(v) for k, v in assigned.items()}
        if snapshot != last:
            last, since = snapshot, loop.time()
        held = [tp for v in snapshot.values() for tp in v]
        if len(snapshot) == members and len(held) == len(set(held)) and set(held) == want:
            if loop.time() - since >= quiet_s:
                return
        assert loop.time() < deadline, f"group never settled: {snapshot}"
        await asyncio.sleep(0.1)


async def test_partitions_cap_how_many_workers_process(
    stack_env: StackEndpoints, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = CommonSettings(session_timeout_ms=3000, topic_partitions=PARTITIONS)
    in_topic, out_topic, group = f"cap-in-{unique}", f"cap-out-{unique}", f"cap-{unique}"
    await ensure_topics(settings, [in_topic, out_topic, dlq_topic(in_topic)])

    # Each loop's current assignment, as its rebalance listener is told.
    assigned: dict[int, set[TopicPartition]] = {}
    listened = loop_module._RebalanceListener.on_partitions_assigned

    async def record_assignment(listener: Any, partitions: set[TopicPartition]) -> None:
        assigned[listener._loop.stage.worker] = set(partitions)
        await listened(listener, partitions)

    monkeypatch.setattr(loop_module._RebalanceListener, "on_partitions_assigned", record_assignment)

    activity = Activity()
    members = PARTITIONS + 1
    loops = [
        StageLoop(SleepStage(i, activity, in_topic, out_topic), settings, group, max_in_flight=4)
        for i in range(members)
    ]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(sl.run(stop)) for sl in loops]
    try:
        await _settled(assigned, members, in_topic, settings.topic_partitions)
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
        await producer.start()
        try:
            for n in range(RECORDS):
                await producer.send_and_wait(in_topic, Job(n=n).to_bytes(), partition=n % settings.topic_partitions)
        finally:
            await producer.stop()
        deadline = asyncio.get_running_loop().time() + 60
        while sum(activity.processed.values()) < RECORDS:
            assert asyncio.get_running_loop().time() < deadline, f"processed {activity.processed}"
            assert not any(t.done() for t in tasks), "a loop stopped"
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 60)

    busy = {w for w, n in activity.processed.items() if n}
    idle = [w for w in range(members) if not assigned.get(w)]
    assert len(busy) == PARTITIONS, f"loops that processed records: {activity.processed}"
    assert idle and idle[0] not in busy and len(idle) == members - PARTITIONS, f"assignments: {assigned}"
    # The cap holds at every moment, and the group does reach it: P loops work at once.
    assert activity.most_loops_at_once == PARTITIONS
