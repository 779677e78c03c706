"""One model backend behind several consumer loops of a stage (the embed stage's captions and
transcripts): one engine, loaded once, closed when the last loop closes.

Each ``ModelStage`` starts its backend in ``setup`` and closes it in ``close``; a stage with two
loops would otherwise build two engines on one engine thread (twice the memory) and close the
engine under the loop still draining.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar, cast

from workers.runtime.stage import ModelBackend

B = TypeVar("B", bound=ModelBackend)


class _Shared:
    def __init__(self, backend: ModelBackend, users: int) -> None:
        self._backend = backend
        self._users = users
        self._closed = 0
        self._started = False
        self._lock = asyncio.Lock()

    def __getattr__(self, name: str) -> Any:  # everything but start/close is the backend's
        return getattr(self._backend, name)

    async def start(self) -> None:
        async with self._lock:
            if not self._started:
                await self._backend.start()
                self._started = True

    async def close(self) -> None:
        async with self._lock:
            self._closed += 1
            if self._closed == self._users and self._started:
                await self._backend.close()


def shared_backend(backend: B, users: int) -> B:
    """``backend`` for ``users`` loops: the first ``start`` starts it, the last ``close`` closes it."""
    return cast(B, _Shared(backend, users))
