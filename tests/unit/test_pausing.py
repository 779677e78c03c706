"""Backpressure: paused while full, still polling, nothing a rebalance lets through is dropped.

The consumer here is a recording stand-in for the four calls `PausingManager` makes; the
loop's behaviour against the real broker is in tests/integration/test_consumer_loop.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import structlog
from aiokafka import TopicPartition

from workers.runtime.pausing import PausingManager

A, B = TopicPartition("t", 0), TopicPartition("t", 1)


@dataclass
class _Record:
    offset: int


@dataclass
class _Consumer:
    assigned: set[TopicPartition] = field(default_factory=lambda: {A})
    paused: set[TopicPartition] = field(default_factory=set)
    seeks: list[tuple[TopicPartition, int]] = field(default_factory=list)
    polls: int = 0
    pending: dict[TopicPartition, list[Any]] = field(default_factory=dict)

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def pause(self, *partitions: TopicPartition) -> None:
        self.paused |= set(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        self.paused -= set(partitions)

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self.seeks.append((partition, offset))

    async def getmany(self, *partitions: TopicPartition, timeout_ms: int = 0) -> dict[TopicPartition, list[Any]]:
        self.polls += 1
        out = {tp: recs for tp, recs in self.pending.items() if tp not in self.paused}
        self.pending = {}
        return out


async def test_full_slots_pause_every_assigned_partition_and_keep_polling() -> None:
    consumer = _Consumer()
    pausing = PausingManager(consumer, structlog.get_logger())
    assert await pausing.poll_paused(in_flight=2), "a new pause"
    assert consumer.paused == {A} and consumer.polls == 1 and pausing.paused
    consumer.assigned = {A, B}  # a rebalance hands over B, which starts unpaused
    assert not await pausing.poll_paused(in_flight=2), "the same pause, not a second one"
    assert consumer.paused == {A, B}, "partitions assigned while paused must be paused too"
    assert consumer.polls == 2
    pausing.resume()
    assert consumer.paused == set() and not pausing.paused


async def test_records_fetched_while_paused_are_rewound_not_dropped() -> None:
    consumer = _Consumer()
    pausing = PausingManager(consumer, structlog.get_logger())
    await pausing.poll_paused(in_flight=1)
    consumer.paused.clear()  # aiokafka after a rebalance: the fresh assignment is not paused
    consumer.pending = {A: [_Record(41), _Record(42)]}
    consumer.pause = lambda *tps: None  # type: ignore[method-assign]  # the pause comes too late
    await pausing.poll_paused(in_flight=1)
    assert consumer.seeks == [(A, 41)], "the first record handed back must be fetched again"
