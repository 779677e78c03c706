"""The query side against a real LanceDB table in a tmp dir: modes, filters inside the store,
the per-object cap, no table, bad queries, instruction and truncation (Searcher with a
recording embed backend; the real vLLM engine is exercised by the CLI and serve tests).
The tests marked ``impure`` open LanceDB or load MiniLM (its tokenizer, or its weights with
sentence-transformers to embed the table's captions); the others are pure logic."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lancedb
import pytest
from pydantic import ValidationError

from tests.search_fixtures import DOCS, LONG, TABLE, build_table, embed
from workers.search.query import SearchQuery, effective_mode, search_table, where_clause
from workers.search.searcher import NO_INDEX, NO_TEXT_INDEX, QueryPrompt, Searcher, load_tokenizer
from workers.settings import SearchSettings


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return build_table(tmp_path_factory.mktemp("index"))


def run(table: Any, q: str, **kw: Any) -> list[Any]:
    query = SearchQuery(q=q, **kw)
    vector = None if query.mode == "text" else embed([q])[0]
    return search_table(table, query, vector)


CAT = next(d for d in DOCS if d.key == "clips/cat.mp4" and d.index == 0)
BOAT = next(d for d in DOCS if d.key == "clips/harbour.mp4")
STOCK = next(d for d in DOCS if d.key == "other/stock.mp4")


@pytest.mark.impure
@pytest.mark.parametrize("mode", ["hybrid", "vector", "text"])
def test_each_mode_finds_the_right_segment(table: Any, mode: str) -> None:
    # Vector mode gets a paraphrase (no shared words); text mode shares words with the caption.
    q = {"vector": "a young cat playing", "text": "kitten yarn", "hybrid": "kitten playing with yarn"}[mode]
    hits = run(table, q, mode=mode, k=3)
    assert hits[0].segment_id == CAT.segment_id
    assert hits[0].start_s == CAT.start_s and hits[0].end_s == CAT.end_s
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert run(table, "sailing boat in a harbour", mode=mode, k=1)[0].segment_id == BOAT.segment_id


@pytest.mark.impure
def test_hit_json_shape(table: Any) -> None:
    hit = run(table, "kitten", k=1)[0]
    assert set(hit.model_dump()) == {
        "object_id",
        "segment_id",
        "uri",
        "bucket",
        "key",
        "start_s",
        "end_s",
        "caption",
        "modality",
        "language",
        "collection",
        "page_number",
        "score",
        "also",
    }
    assert hit.uri == "s3://media/clips/cat.mp4" and hit.object_id == CAT.object_id
    assert hit.collection == "clips"


@pytest.mark.impure
@pytest.mark.parametrize("mode", ["hybrid", "vector", "text"])
def test_filters_are_applied_in_the_store(table: Any, mode: str) -> None:
    # The best match lives in bucket archive; filtered away, other buckets' hits remain.
    q = "stock market traders watch screens in a kitchen"
    assert run(table, q, mode=mode, k=1)[0].segment_id == STOCK.segment_id
    hits = run(table, q, mode=mode, bucket="media", k=5, per_object=0)
    assert len(hits) == 5 and all(h.bucket == "media" for h in hits)
    hits = run(table, q, mode=mode, bucket="archive", k=5)
    assert hits and {h.bucket for h in hits} == {"archive"}
    hits = run(table, "kitchen", mode=mode, prefix="clips/", k=10, per_object=0)
    assert hits and all(h.key and h.key.startswith("clips/") for h in hits)
    hits = run(table, "kitten in a kitchen", mode=mode, object_id=CAT.object_id, k=10)
    assert hits and {h.object_id for h in hits} == {CAT.object_id}
    assert run(table, "kitchen", mode=mode, prefix="o'brien/", k=5) == []  # quotes are escaped


def test_where_clause_quotes_values() -> None:
    q = SearchQuery(q="x", bucket="b", prefix="it's/", object_id="o")
    assert where_clause(q) == "bucket = 'b' AND starts_with(key, 'it''s/') AND object_id = 'o'"
    assert where_clause(SearchQuery(q="x")) is None


@pytest.mark.impure
@pytest.mark.parametrize("mode", ["hybrid", "vector", "text"])
def test_per_object_cap_keeps_one_video_from_filling_the_page(table: Any, mode: str) -> None:
    long_id = LONG[0].object_id
    hits = run(table, "chef chops onions in a kitchen", mode=mode, k=6, per_object=2)
    assert sum(h.object_id == long_id for h in hits) == 2
    assert len(hits) >= 3  # other objects fill the page
    uncapped = run(table, "chef chops onions in a kitchen", mode=mode, k=6, per_object=0)
    assert sum(h.object_id == long_id for h in uncapped) == 6


@pytest.mark.impure
def test_text_mode_without_full_text_index_falls_back_to_vector(tmp_path: Path) -> None:
    bare = build_table(tmp_path, text_index=False)
    assert effective_mode(bare, "text", have_vector=True) == "vector"
    assert effective_mode(bare, "hybrid", have_vector=True) == "vector"
    assert effective_mode(bare, "text", have_vector=False) is None
    assert run(bare, "kitten playing with yarn", mode="hybrid", k=1)[0].segment_id == CAT.segment_id
    assert search_table(bare, SearchQuery(q="kitten", mode="text"), None) == []


def test_no_table_no_hits() -> None:
    assert search_table(None, SearchQuery(q="anything"), None) == []


@pytest.mark.parametrize("q", ["", "   ", "\n\t"])
def test_empty_query_is_rejected(q: str) -> None:
    with pytest.raises(ValidationError, match="empty query"):
        SearchQuery(q=q)


class RecordingBackend:
    """Embeds with sentence-transformers and remembers what it was asked to embed."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.started = False

    async def start(self) -> None:
        self.started = True

    async def embed(self, text: str) -> list[float]:
        self.texts.append(text)
        return embed([text])[0]

    async def close(self) -> None:
        self.started = False


def settings(index: Path, **kw: Any) -> SearchSettings:
    from workers.models.offline import minilm_model_dir

    values: dict[str, Any] = {"index_uri": str(index), "index_table": TABLE, "embed_model": str(minilm_model_dir())}
    return SearchSettings(**(values | kw))


@pytest.mark.impure
async def test_searcher_with_no_index_returns_no_hits(tmp_path: Path) -> None:
    backend = RecordingBackend()
    searcher = Searcher(settings(tmp_path / "none"), backend)  # type: ignore[arg-type]
    await searcher.start()
    result = await searcher.search(SearchQuery(q="kitten"))
    assert result.hits == [] and result.notice == NO_INDEX and backend.texts == []


@pytest.mark.impure
async def test_searcher_applies_the_query_instruction(tmp_path: Path) -> None:
    build_table(tmp_path)
    backend = RecordingBackend()
    instruction = "Instruct: Given a search query, retrieve the video moments it describes\nQuery:{query}"
    searcher = Searcher(settings(tmp_path, embed_query_instruction=instruction), backend)  # type: ignore[arg-type]
    await searcher.start()
    result = await searcher.search(SearchQuery(q="  kitten playing  ", k=2))
    assert backend.texts == [
        "Instruct: Given a search query, retrieve the video moments it describes\nQuery:kitten playing"
    ]
    assert result.mode == "hybrid" and result.query == "kitten playing" and not result.truncated
    # Empty instruction (the offline MiniLM profile): the query is embedded as is.
    backend.texts.clear()
    plain = Searcher(settings(tmp_path, embed_query_instruction=""), backend)  # type: ignore[arg-type]
    await plain.search(SearchQuery(q="kitten playing"))
    assert backend.texts == ["kitten playing"]


@pytest.mark.impure
async def test_searcher_reports_the_vector_fallback(tmp_path: Path) -> None:
    build_table(tmp_path, text_index=False)
    searcher = Searcher(settings(tmp_path), RecordingBackend())  # type: ignore[arg-type]
    result = await searcher.search(SearchQuery(q="kitten with yarn", mode="text"))
    assert result.mode == "vector" and result.notice == NO_TEXT_INDEX
    assert result.hits[0].segment_id == CAT.segment_id


@pytest.mark.impure
async def test_over_long_query_is_truncated_to_the_model_limit_and_flagged(tmp_path: Path) -> None:
    build_table(tmp_path)
    backend = RecordingBackend()
    searcher = Searcher(settings(tmp_path, embed_query_instruction=""), backend)  # type: ignore[arg-type]
    long_q = "kitten playing with yarn " + " ".join(f"word{i}" for i in range(2000))
    result = await searcher.search(SearchQuery(q=long_q, k=1))
    assert result.truncated and result.query_tokens is not None and result.query_tokens <= 256  # MiniLM's limit
    assert long_q.startswith(result.query) and len(result.query) < len(long_q)
    assert result.hits[0].segment_id == CAT.segment_id
    tokenizer = load_tokenizer(searcher.settings.embed_model)
    assert tokenizer is not None and tokenizer.count(backend.texts[0]) <= 256
    short = await searcher.search(SearchQuery(q="kitten"))
    assert not short.truncated


@pytest.mark.impure
def test_prompt_fit_counts_the_instruction() -> None:
    from workers.models.offline import minilm_model_dir

    tokenizer = load_tokenizer(str(minilm_model_dir()))
    assert tokenizer is not None
    prompt = QueryPrompt("find: {query}", tokenizer, max_tokens=20)
    text, truncated, n = prompt.fit(
        "one two three four five six seven eight nine ten eleven twelve thirteen "
        "fourteen fifteen sixteen seventeen eighteen nineteen twenty"
    )
    assert truncated and 18 <= n <= 20 and text.startswith("one two")  # cut close to the limit
    assert tokenizer.count(prompt.prompt(text)) == n
    assert (
        prompt.fit("one two") == ("one two", False, tokenizer.count("find: one two")) == ("one two", False, 6)
    )  # [CLS] find : one two [SEP]


@pytest.mark.impure
def test_table_helper_writes_rows(tmp_path: Path) -> None:
    build_table(tmp_path, docs=[CAT])
    assert lancedb.connect(str(tmp_path)).open_table(TABLE).count_rows() == 1


def test_hybrid_fusion_keeps_the_vector_legs_best_row_ahead_of_incidental_word_matches() -> None:
    # A paraphrase: the right row shares no word with the query (vector leg only, rank 1); an
    # unrelated row shares a common word and sits low in both legs. Rank fusion (RRF) put the
    # unrelated row first; score fusion must not.
    from workers.search.query import fuse

    vector = [
        {"segment_id": "right", "_score": 0.82},
        *({"segment_id": f"v{i}", "_score": 0.60 - i * 0.01} for i in range(30)),
        {"segment_id": "incidental", "_score": 0.31},
    ]
    text = [
        *({"segment_id": f"t{i}", "_score": 9.0 - i * 0.2} for i in range(30)),
        {"segment_id": "incidental", "_score": 1.2},
    ]
    ranked = [row["segment_id"] for row in fuse(vector, text)]
    assert ranked[0] == "right"
    assert ranked.index("right") < ranked.index("incidental")
    # A row that leads both legs still leads the fusion.
    assert fuse([{"segment_id": "both", "_score": 0.9}], [{"segment_id": "both", "_score": 5.0}])[0]["_score"] == 1.0
