"""Redis writes queued on one pipeline, and what each reply counts toward.

``capstream reconcile`` replays every record on the topics through the workers' Lua scripts.
Run one at a time that was ~3 sequential round trips per segment (2,823 records/s at 100k
segments with the vectors held, docs/benchmarks.md); queued per read batch (500 records) it
is one round trip per batch, and reconcile runs 8,723 records/s. No MULTI: each script is
atomic on its own and all of them are idempotent and order-free, so a batch cut short by a
lost connection is simply written again by the next reconcile. Replies come back in queue
order; the commands that run in Redis run in it too, so a result row still lands before the
marker that completes its object.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from redis.asyncio import Redis


@dataclass
class Tally:
    """Of the replies of one batch: how many counted per counter, and for which objects."""

    counted: Counter[str] = field(default_factory=Counter)
    by_object: dict[str, set[str]] = field(default_factory=dict)

    def count(self, counter: str) -> int:
        return self.counted[counter]

    def objects(self, counter: str) -> set[str]:
        return self.by_object.get(counter, set())


def counts(reply: object) -> bool:
    """A reply that did something: 1 or True (a marker or claim newly set, an object failed),
    or a sequencer that moved forward ('newer'; not 'current' or 'stale')."""
    if isinstance(reply, bytes):
        reply = reply.decode()
    return reply == "newer" if isinstance(reply, str) else bool(reply)


class RedisBatch:
    def __init__(self, redis: Redis) -> None:
        self.pipe = redis.pipeline(transaction=False)
        self._tags: list[tuple[str | None, str | None]] = []

    def queued(self, counter: str | None = None, object_id: str | None = None) -> None:
        """Call once per command queued on ``pipe``: its reply counts toward ``counter`` (and
        names ``object_id``), or toward nothing."""
        self._tags.append((counter, object_id))

    async def execute(self) -> Tally:
        tally = Tally()
        if not self._tags:
            return tally
        async with self.pipe as pipe:
            replies = await pipe.execute()
        if len(replies) != len(self._tags):
            raise RuntimeError(f"{len(replies)} replies for {len(self._tags)} queued commands")
        for (counter, object_id), reply in zip(self._tags, replies, strict=True):
            if counter is not None and counts(reply):
                tally.counted[counter] += 1
                if object_id is not None:
                    tally.by_object.setdefault(counter, set()).add(object_id)
        return tally
