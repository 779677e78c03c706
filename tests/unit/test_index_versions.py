"""Which object versions of a key stay in the index (workers/index/versions.py)."""

from __future__ import annotations

from workers.index.versions import ObjectVersion, Tombstone, blocks, dead_objects, newer, sweeps


def v(seq: str) -> str:
    return "s:" + seq.rjust(32, "0")


def test_versions_order_only_within_one_kind() -> None:
    assert newer(v("20"), v("10")) and not newer(v("10"), v("20")) and not newer(v("10"), v("10"))
    assert not newer("t:2030-01-01T00:00:00+00:00", v("10")) and not newer(v("10"), "t:2000-01-01T00:00:00+00:00")
    assert not newer(None, v("10")) and not newer(v("10"), None)


def test_a_newer_version_makes_older_ones_dead_whatever_the_arrival_order() -> None:
    old, new = ObjectVersion("old", v("10")), ObjectVersion("new", v("20"))
    assert dead_objects([old, new], []) == {"old"}
    assert dead_objects([new, old], []) == {"old"}
    # Versions that do not order each other are both kept.
    assert dead_objects([old, ObjectVersion("x", "t:2030-01-01T00:00:00+00:00"), ObjectVersion("y", None)], []) == set()


def test_a_key_removal_blocks_versions_up_to_it_and_not_later_uploads() -> None:
    removal = Tombstone("media", "a.mp4", v("15"), None)
    assert blocks(removal, ObjectVersion("before", v("10")))
    assert not blocks(removal, ObjectVersion("after", v("30")))
    # Without order, nothing arriving later is blocked, but what is present is swept.
    assert not blocks(removal, ObjectVersion("unordered", None)) and sweeps(removal, ObjectVersion("unordered", None))
    unversioned = Tombstone("media", "a.mp4", None, None)
    assert not blocks(unversioned, ObjectVersion("any", v("10"))) and sweeps(unversioned, ObjectVersion("any", v("10")))
    assert dead_objects([ObjectVersion("before", v("10")), ObjectVersion("after", v("30"))], [removal]) == {"before"}


def test_a_version_removal_blocks_that_object_only_and_the_previous_version_is_current_again() -> None:
    removal = Tombstone("media", "a.mp4", v("16"), "current")
    previous, current = ObjectVersion("previous", v("05")), ObjectVersion("current", v("10"))
    assert blocks(removal, current) and not blocks(removal, previous)
    assert dead_objects([previous, current], [removal]) == {"current"}
