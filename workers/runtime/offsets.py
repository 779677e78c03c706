"""Which offset of a partition is safe to commit while records finish out of order."""

from __future__ import annotations

from collections import deque


class PartitionOffsets:
    """Records start in offset order and may finish in any order; the commit point is the
    first unfinished offset, so nothing behind an unfinished record is ever committed."""

    def __init__(self) -> None:
        self._started: deque[int] = deque()
        self._finished: set[int] = set()
        self._next_commit: int | None = None
        self.committed: int | None = None

    def start(self, offset: int) -> None:
        self._started.append(offset)

    def finish(self, offset: int) -> None:
        self._finished.add(offset)
        while self._started and self._started[0] in self._finished:
            done = self._started.popleft()
            self._finished.discard(done)
            self._next_commit = done + 1

    @property
    def in_flight(self) -> int:
        return len(self._started)

    def to_commit(self) -> int | None:
        """Offset to commit now, or None if nothing advanced since the last commit."""
        if self._next_commit is None or self._next_commit == self.committed:
            return None
        return self._next_commit
