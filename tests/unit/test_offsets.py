from workers.runtime.offsets import PartitionOffsets


def test_commit_point_waits_for_the_first_unfinished_record() -> None:
    po = PartitionOffsets()
    for off in (10, 11, 12):
        po.start(off)
    po.finish(12)
    assert po.to_commit() is None  # 10 and 11 still running
    po.finish(10)
    assert po.to_commit() == 11
    po.committed = 11
    assert po.to_commit() is None
    po.finish(11)
    assert po.to_commit() == 13
    assert po.in_flight == 0
