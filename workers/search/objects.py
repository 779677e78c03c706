"""Search at the object level (``capstream search --level object``, ``GET /search/objects``):
whole media files ranked, each with its summary, chapters and best moments.

An object ranks by its best moment: the usual hybrid search runs over the segments (captions,
transcripts, pages) with ``OBJECT_POOL`` candidates per object wanted, no per-object cap, and
hits are grouped by object in rank order. Summaries are not embedded, so they decide no rank;
they ride along from the ``objects`` table (``workers.index.objects``), where an object that
has not been summarized yet simply has none.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from schemas.summary import Chapter
from workers.search.query import SearchHit

OBJECT_POOL = 10  # segment candidates per object asked for
MOMENTS_PER_OBJECT = 3


class ObjectHit(BaseModel):
    object_id: str
    uri: str
    bucket: str | None
    key: str | None
    collection: str | None = None
    score: float = Field(description="the score of its best moment")
    summary: str | None = Field(default=None, description="None until the summarize stage wrote one")
    chapters: list[Chapter] = Field(default_factory=list)
    duration_s: float | None = None
    moments: list[SearchHit] = Field(description="its best moments, best first")


def pool_size(k: int, limit: int = 200) -> int:
    """Segment hits to ask for to fill ``k`` objects (the segment search takes at most 200)."""
    return min(max(k * OBJECT_POOL, 50), limit)


def group_by_object(hits: list[SearchHit], k: int) -> list[ObjectHit]:
    """The first ``k`` objects among ``hits`` (best first), each with its best moments."""
    objects: dict[str, ObjectHit] = {}
    for h in hits:
        found = objects.get(h.object_id)
        if found is None:
            if len(objects) == k:
                continue
            objects[h.object_id] = ObjectHit(
                object_id=h.object_id,
                uri=h.uri,
                bucket=h.bucket,
                key=h.key,
                collection=h.collection,
                score=h.score,
                moments=[h],
            )
        elif len(found.moments) < MOMENTS_PER_OBJECT:
            found.moments.append(h)
    return list(objects.values())
