"""How long each kind of topic keeps its records: the promise that Redis and the index are
rebuildable from the topics holds only while the topics still hold what they are rebuilt from.

Five roles (``workers.stages`` gives every topic one; the deployment files and
``ensure_topics`` read them from there):

- ``RECORD``, kept forever: the objects' events, captions, embeddings and removals.
  ``capstream reindex`` rebuilds the index from embeddings and removals, ``capstream
  reconcile`` rebuilds Redis's markers and result view from captions and embeddings, and a
  re-decode (a new segmentation policy, a new caption model) replays the objects topic, the
  only list of what was uploaded and removed, in order. Together ~103 MB per media hour with
  the production models, nearly all of it embeddings (``docs/sizing.md#broker-disk``,
  measured by ``loadtest/topic_bytes.py``).
- ``FRAMES``: the segments topic, inline JPEG frames, the largest (285 MB per media hour, the
  same page): kept 3 days, long enough to redo captions after an outage or a bad caption
  deploy. Older captions can only be redone by decoding the media again, and reconcile no
  longer finds the decoded counts, totals and claims of objects older than that
  (``docs/guarantees.md``).
- ``DEAD_LETTERS``: kept 30 days for inspection and ``capstream dlq`` replay.
- ``FEED``: a source's own event feed (SeaweedFS's filer topic) that the bridge turns into
  records: 7 days, whatever the broker's default is.
- ``NOTICES``: the outcomes topic the webhooks stage relays from Redis and delivers from:
  7 days, as long as a delivery can be retried or looked into; nothing is rebuilt from it.

Apache Kafka's default is 7 days (``log.retention.hours=168``): a topic created without an
override loses its records after a week, which is why every role states both settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

DAY_MS: Final = 24 * 3600 * 1000
UNLIMITED: Final = -1


@dataclass(frozen=True)
class TopicRetention:
    role: str
    retention_ms: int  # UNLIMITED = kept forever
    retention_bytes: int = UNLIMITED  # per partition

    @property
    def is_record(self) -> bool:
        return self.retention_ms == UNLIMITED and self.retention_bytes == UNLIMITED

    def configs(self) -> dict[str, str]:
        """The topic configs that give a topic this retention."""
        return {"retention.ms": str(self.retention_ms), "retention.bytes": str(self.retention_bytes)}


RECORD: Final = TopicRetention("record", UNLIMITED)
FRAMES: Final = TopicRetention("frames", 3 * DAY_MS)
DEAD_LETTERS: Final = TopicRetention("dead letters", 30 * DAY_MS)
FEED: Final = TopicRetention("feed", 7 * DAY_MS)
NOTICES: Final = TopicRetention("notices", 7 * DAY_MS)


def retention_problems(topic: str, declared: TopicRetention, actual: Mapping[str, str]) -> list[str]:
    """What is wrong with ``actual`` (a topic's configs as a deployment or the broker states
    them) for a topic of the ``declared`` role. A record topic must keep everything: a
    missing setting means the broker default (7 days of time on Apache Kafka), so it is a
    problem too. Other roles must match what is declared."""
    problems = []
    for key, want in declared.configs().items():
        have = actual.get(key)
        if have is None and declared.is_record:
            problems.append(f"{topic} ({declared.role}) has no {key}: the broker default expires it, want {want}")
        elif have is not None and have != want:
            problems.append(f"{topic} ({declared.role}) has {key}={have}, want {want}")
    return problems
