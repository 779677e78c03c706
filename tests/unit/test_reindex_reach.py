"""The quick refusal of ``reindex --from-scratch``: do the topics still reach back to the
oldest row of the index? (Pure: partition starts as the broker reports them.)"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from workers.index.reindex import reach_problem
from workers.runtime.kafka import PartitionStart

OLDEST = datetime(2026, 11, 1, tzinfo=UTC)


def ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def test_an_index_without_rows_or_topics_that_lost_nothing_can_be_rebuilt() -> None:
    late = ms(OLDEST + timedelta(days=3))
    assert reach_problem("t", {0: PartitionStart(5, late)}, None) is None
    # Offset 0: nothing was ever removed, however young its first record (a quiet partition).
    assert reach_problem("t", {0: PartitionStart(0, late), 1: PartitionStart(0, None)}, OLDEST) is None
    # Records were removed, but what is left reaches back before the oldest row.
    assert reach_problem("t", {0: PartitionStart(9, ms(OLDEST - timedelta(days=1)))}, OLDEST) is None


def test_a_partition_that_starts_after_the_oldest_row_refuses_with_why() -> None:
    starts = {0: PartitionStart(0, ms(OLDEST)), 1: PartitionStart(1200, ms(OLDEST + timedelta(days=2)))}
    problem = reach_problem("media.embeddings", starts, OLDEST)
    assert problem is not None
    assert "media.embeddings[1] starts at offset 1200" in problem and "retention" in problem
    assert "2026-11-01" in problem and "decoded again" in problem


def test_a_partition_emptied_by_retention_refuses() -> None:
    problem = reach_problem("t", {0: PartitionStart(40, None)}, OLDEST)
    assert problem is not None and "lost every record up to offset 40" in problem


def test_clock_skew_between_producers_and_writers_is_tolerated() -> None:
    assert reach_problem("t", {0: PartitionStart(3, ms(OLDEST + timedelta(minutes=2)))}, OLDEST) is None
    assert reach_problem("t", {0: PartitionStart(3, ms(OLDEST + timedelta(minutes=10)))}, OLDEST) is not None
