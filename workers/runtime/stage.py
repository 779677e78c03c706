"""What a stage is: typed input, setup once, ``process`` a record into output messages.

The consumer loop (``workers.runtime.loop``) owns polling, concurrency, retries, dead
letters and commits; a stage only turns one input into outputs and records side effects
once those outputs are acknowledged by the broker.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Generic, TypeVar

import structlog

from schemas.base import Message
from schemas.dead_letter import DeadLetter

In = TypeVar("In")


@dataclass(frozen=True)
class Output:
    topic: str
    key: str
    value: Message


@dataclass(frozen=True)
class RecordContext:
    topic: str
    partition: int
    offset: int
    key: str | None
    value: bytes
    attempt: int
    log: structlog.typing.FilteringBoundLogger

    @property
    def owner(self) -> str:
        """Identity of the Kafka record, stable across redeliveries of that record."""
        return f"{self.topic}/{self.partition}/{self.offset}"


class Stage(abc.ABC, Generic[In]):
    name: str
    input_topic: str
    output_topics: tuple[str, ...]

    async def setup(self) -> None:  # noqa: B027 - optional hook
        """Load models, open clients. Called once before the first record."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release what setup acquired."""

    @abc.abstractmethod
    def parse(self, value: bytes) -> In:
        """Decode a record value; raise PermanentError if it can never be processed."""

    @abc.abstractmethod
    def process(self, item: In, ctx: RecordContext) -> AsyncIterator[Output]:
        """Yield outputs as they are ready (streamed to the broker as they come)."""

    async def delivered(self, item: In, ctx: RecordContext) -> None:  # noqa: B027 - optional hook
        """Every output of ``item`` is acknowledged: record progress/idempotency markers."""

    async def dead_lettered(self, item: In | None, letter: DeadLetter, ctx: RecordContext) -> None:  # noqa: B027
        """The record went to the DLQ: show it as failed in progress."""
