"""Backpressure for one consumer: pause the partitions while every in-flight slot is taken.

A paused consumer must keep polling, or the group coordinator evicts it after
``max.poll.interval.ms`` and its partitions move elsewhere mid-work. Polling while paused can
still hand back records: a rebalance assigns fresh partitions, which start unpaused. Those are
not processed now (there is no slot) and must not be dropped (the commit would then skip past
them), so they are rewound and fetched again once a slot frees.
"""

from __future__ import annotations

from typing import Protocol

import structlog
from aiokafka import TopicPartition


class PausableConsumer(Protocol):
    """The part of ``AIOKafkaConsumer`` backpressure uses."""

    def assignment(self) -> set[TopicPartition]: ...
    def pause(self, *partitions: TopicPartition) -> None: ...
    def resume(self, *partitions: TopicPartition) -> None: ...
    def seek(self, partition: TopicPartition, offset: int) -> None: ...
    async def getmany(self, *partitions: TopicPartition, timeout_ms: int = 0) -> dict[TopicPartition, list]: ...


class PausingManager:
    def __init__(self, consumer: PausableConsumer, log: structlog.typing.FilteringBoundLogger) -> None:
        self._consumer = consumer
        self._log = log
        self.paused = False

    async def poll_paused(self, in_flight: int, timeout_ms: int = 100) -> bool:
        """Pause every assigned partition and poll once without taking any record. True if
        the consumer was running until now (a new pause)."""
        newly = not self.paused
        if newly:
            self.paused = True
            self._log.debug("paused", in_flight=in_flight)
        # Every pass, not once: partitions assigned since the last pass start unpaused.
        self._consumer.pause(*self._consumer.assignment())
        for tp, records in (await self._consumer.getmany(timeout_ms=timeout_ms)).items():
            if records:
                self._consumer.seek(tp, records[0].offset)
        return newly

    def resume(self) -> None:
        """A slot is free: fetch again from every assigned partition."""
        if self.paused:
            self._consumer.resume(*self._consumer.assignment())
            self.paused = False
