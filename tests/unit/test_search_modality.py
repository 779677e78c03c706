"""Speech rows beside captions in one table: ``modality`` filters inside the store, and a
caption and what was said at the same moment come back as one hit (``also``)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.search_fixtures import DOCS, Doc, build_table, embed
from workers.search.query import SearchQuery, merge_moments, search_table, where_clause

CAT = next(d for d in DOCS if d.key == "clips/cat.mp4" and d.index == 0)
# Said while the kitten played (chunk 0 spans the caption's 0-5 s), and later, alone.
SAID = Doc("media", "clips/cat.mp4", 0, "her name is mittens and she loves the yarn", modality="speech", language="en")
LATER = Doc("media", "clips/cat.mp4", 3, "mittens is asleep now", modality="speech", language="en")


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return build_table(tmp_path_factory.mktemp("index"), [*DOCS, SAID, LATER])


def run(table: Any, q: str, **kw: Any) -> list[Any]:
    query = SearchQuery(q=q, **kw)
    return search_table(table, query, None if query.mode == "text" else embed([q])[0])


@pytest.mark.impure
@pytest.mark.parametrize("mode", ["hybrid", "text"])
def test_a_spoken_word_is_found_with_its_time_and_modality(table: Any, mode: str) -> None:
    hits = run(table, "mittens", mode=mode, modality="speech", k=5)
    assert {h.segment_id for h in hits} == {SAID.segment_id, LATER.segment_id}
    assert all(h.modality == "speech" and h.language == "en" for h in hits)
    said = next(h for h in hits if h.segment_id == SAID.segment_id)
    assert (said.start_s, said.end_s) == (SAID.start_s, SAID.end_s)


@pytest.mark.impure
@pytest.mark.parametrize("modality", ["visual", "speech"])
def test_the_modality_filter_runs_in_the_store(table: Any, modality: str) -> None:
    hits = run(table, "kitten mittens yarn", modality=modality, k=10, per_object=0, merge=False)
    assert hits and {h.modality for h in hits} == {modality}


@pytest.mark.impure
def test_a_caption_and_the_speech_of_its_moment_merge_into_one_hit(table: Any) -> None:
    hits = run(table, "kitten mittens yarn", k=5, per_object=0)
    top = next(h for h in hits if CAT.segment_id in {h.segment_id, *(a.segment_id for a in h.also)})
    ids = {top.segment_id, *(a.segment_id for a in top.also)}
    assert ids == {CAT.segment_id, SAID.segment_id}  # the later speech is another moment
    assert {top.modality, *(a.modality for a in top.also)} == {"visual", "speech"}
    assert not any(SAID.segment_id == h.segment_id for h in hits if h is not top)
    unmerged = run(table, "kitten mittens yarn", k=10, per_object=0, merge=False)
    assert {CAT.segment_id, SAID.segment_id} <= {h.segment_id for h in unmerged}


def test_merge_folds_only_overlapping_rows_of_another_modality() -> None:
    def row(sid: str, modality: str, start: float, end: float, obj: str = "o") -> dict[str, Any]:
        return {"object_id": obj, "segment_id": sid, "modality": modality, "start_s": start, "end_s": end,
                "caption": sid, "_score": 1.0}  # fmt: skip

    rows = [
        row("v0", "visual", 0, 5),
        row("s0", "speech", 4, 9),  # overlaps v0: folded
        row("v1", "visual", 5, 10),  # same modality as v0: its own hit
        row("s1", "speech", 20, 25),  # no overlap
        row("x", "speech", 0, 5, obj="other"),  # another object
        row("s2", "speech", 1, 3),  # v0 already holds a speech row: folded into nothing, stays
    ]
    merged = merge_moments(rows)
    assert [r["segment_id"] for r in merged] == ["v0", "v1", "s1", "x", "s2"]
    assert [a["segment_id"] for a in merged[0]["also"]] == ["s0"]


def test_modality_is_part_of_the_where_clause() -> None:
    assert where_clause(SearchQuery(q="x", modality="speech")) == "modality = 'speech'"
