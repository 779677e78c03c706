"""Which offset of a partition is safe to commit while records finish out of order."""

from __future__ import annotations

from collections import deque


class OffsetOrderError(ValueError):
    """An offset went backwards: committing from this state could skip or repeat records."""


class PartitionOffsets:
    """Records start in offset order and may finish in any order; the commit point is the
    first unfinished offset, so nothing behind an unfinished record is ever committed.

    Offsets only move forward: a record started at or below one already started, or a commit
    below the last one, is refused (a rewind must start a fresh ``PartitionOffsets``, as a
    reassigned partition does).
    """

    def __init__(self) -> None:
        self._started: deque[int] = deque()
        self._finished: set[int] = set()
        self._last_started: int | None = None
        self._next_commit: int | None = None
        self._committed: int | None = None

    def start(self, offset: int) -> None:
        if self._last_started is not None and offset <= self._last_started:
            raise OffsetOrderError(f"offset {offset} started after {self._last_started}")
        self._started.append(offset)
        self._last_started = offset

    def finish(self, offset: int) -> None:
        if offset not in self._started:
            raise OffsetOrderError(f"offset {offset} finished but was never started (or finished twice)")
        self._finished.add(offset)
        while self._started and self._started[0] in self._finished:
            done = self._started.popleft()
            self._finished.discard(done)
            self._next_commit = done + 1

    @property
    def in_flight(self) -> int:
        return len(self._started)

    @property
    def committed(self) -> int | None:
        return self._committed

    def mark_committed(self, offset: int) -> None:
        """The broker acknowledged a commit of ``offset``."""
        if self._committed is not None and offset < self._committed:
            raise OffsetOrderError(f"commit {offset} is behind the last commit {self._committed}")
        self._committed = offset

    def to_commit(self) -> int | None:
        """Offset to commit now, or None if nothing advanced since the last commit."""
        if self._next_commit is None or self._next_commit == self._committed:
            return None
        return self._next_commit
