import pytest

from workers.runtime.offsets import OffsetOrderError, PartitionOffsets


def test_commit_point_waits_for_the_first_unfinished_record() -> None:
    po = PartitionOffsets()
    for off in (10, 11, 12):
        po.start(off)
    po.finish(12)
    assert po.to_commit() is None  # 10 and 11 still running
    po.finish(10)
    assert po.to_commit() == 11
    po.mark_committed(11)
    assert po.to_commit() is None
    po.finish(11)
    assert po.to_commit() == 13
    assert po.in_flight == 0


def test_offsets_never_go_backwards() -> None:
    po = PartitionOffsets()
    po.start(5)
    with pytest.raises(OffsetOrderError):
        po.start(5)  # the same record twice
    with pytest.raises(OffsetOrderError):
        po.start(4)
    with pytest.raises(OffsetOrderError):
        po.finish(3)  # never started
    po.finish(5)
    with pytest.raises(OffsetOrderError):
        po.finish(5)  # finished twice
    po.mark_committed(6)
    with pytest.raises(OffsetOrderError):
        po.mark_committed(2)
    assert po.committed == 6 and po.to_commit() is None
