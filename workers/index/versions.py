"""Which object versions of a key may stay in the index: pure decisions, no store.

Versions are the ``version`` tokens the decode stage puts on every segment (``'s:'`` + the S3
sequencer left-padded to 32, or ``'t:'`` + the event time). Two tokens order each other only
when they are of the same kind: a sequencer says nothing about an event time. When versions do
not order, nothing is superseded and nothing is blocked: keeping a row is the safe mistake
(a search hit that the next event of the key corrects), dropping one is not.

Index workers of one consumer group see the versions of one key on different partitions (the
embeddings topic is keyed by object id), in any order. So the rule is stated over the set of
what is known about a key, never over arrival order: an object version is *dead* when a newer
version of its key is known, or a removal covers it. A writer applies the rule after its own
commit too (``SegmentIndex``), so whichever of two racing writers commits last sees both.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


def newer(a: str | None, b: str | None) -> bool:
    """``a`` orders after ``b``: both known, of the same kind, and ``a`` is greater."""
    return a is not None and b is not None and a[:2] == b[:2] and a > b


def not_after(a: str | None, b: str | None) -> bool:
    """``a`` orders at or before ``b`` (both known, same kind)."""
    return a is not None and b is not None and a[:2] == b[:2] and a <= b


@dataclass(frozen=True)
class Tombstone:
    """A recorded removal of ``bucket/key``: of one version (``object_id``), or of every
    version up to ``version`` (``object_id`` None)."""

    bucket: str
    key: str
    version: str | None
    object_id: str | None


@dataclass(frozen=True)
class ObjectVersion:
    """One object version of a key, as the table or a batch knows it."""

    object_id: str
    version: str | None


def blocks(tomb: Tombstone, obj: ObjectVersion) -> bool:
    """The removal keeps this object version out of the index, whenever it arrives.

    A removal without an ordering token cannot tell an older version from a re-upload, so it
    blocks nothing that arrives later (``sweeps`` still removes what is present).
    """
    if tomb.object_id is not None:
        return tomb.object_id == obj.object_id
    return not_after(obj.version, tomb.version)


def sweeps(tomb: Tombstone, obj: ObjectVersion) -> bool:
    """The removal deletes this object version when it is applied: what it blocks, and rows
    of the key whose version does not order after it (unversioned rows, other token kinds)."""
    if tomb.object_id is not None:
        return tomb.object_id == obj.object_id
    return not newer(obj.version, tomb.version)


def dead_objects(objects: Iterable[ObjectVersion], tombstones: Iterable[Tombstone]) -> set[str]:
    """Object ids among ``objects`` (all of one key) that must not be in the index: a tombstone
    of the key blocks them, or a newer version that is not itself removed is among them (S3
    makes the previous version current again when the current one is deleted)."""
    tombs = list(tombstones)
    known = set(objects)
    blocked = {obj for obj in known if any(blocks(t, obj) for t in tombs)}
    live = known - blocked
    superseded = {obj for obj in live if any(newer(other.version, obj.version) for other in live)}
    return {obj.object_id for obj in blocked | superseded}
