"""The search loadtests run and say what they measured (behaviour, not speed), and the default
retrieval corpus is well-formed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from loadtest import search_bench
from loadtest.search_eval import DEFAULT_CORPUS, load_corpus, score


def test_default_corpus_is_well_formed() -> None:
    data = json.loads(Path(DEFAULT_CORPUS).read_text())
    segments, queries = data["segments"], data["queries"]
    assert len(segments) >= 300 and len(queries) >= 60
    ids = [s["id"] for s in segments]
    assert len(set(ids)) == len(ids)
    assert len({s["object"] for s in segments}) >= 40
    for s in segments:
        assert set(s) >= {"id", "object", "start_s", "end_s", "caption"}
        assert 0 <= s["start_s"] <= s["end_s"] and s["caption"].strip()
    for q in queries:
        assert q["q"].strip() and q["relevant"]
        assert set(q["relevant"]) <= set(ids), q
    kinds = {q.get("kind") for q in queries}
    assert kinds == {"paraphrase", "exact"}
    corpus = load_corpus(DEFAULT_CORPUS)  # the loader's own checks agree
    assert len(corpus.queries) == len(queries)


def test_limited_corpus_keeps_what_its_queries_need() -> None:
    corpus = load_corpus(DEFAULT_CORPUS, limit=2)
    assert len(corpus.queries) == 4
    ids = {s["id"] for s in corpus.segments}
    assert all(set(q.relevant) <= ids for q in corpus.queries)


def test_scores() -> None:
    assert score(["a", "b", "c"], ("b",)) == {"r@1": 0.0, "r@5": 1.0, "r@10": 1.0, "mrr": 0.5}
    assert score(["x"] * 10 + ["a"], ("a", "b"))["mrr"] == 0.0


@pytest.mark.impure  # LanceDB
def test_search_bench_runs_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert search_bench.main(["--rows", "2000", "--queries", "10", "--dir", str(tmp_path / "bench")]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^ingest: [\d,]+ rows/s through SegmentIndex\.upsert", out, re.M)
    assert "vector index: IVF_HNSW_SQ" in out
    for kind in ("vector (index)", "vector exact (no index)", "text (BM25)", "hybrid + filter"):
        assert kind in out
    assert "search_table (refine_factor=" in out and "LanceDB defaults (no refine)" in out
    last = out.strip().splitlines()[-1]
    assert re.fullmatch(
        r"search_bench: rows=2000 ingest_rows_s=\d+ vector_p95_ms=[\d.]+ text_p95_ms=[\d.]+ "
        r"hybrid_filter_p95_ms=[\d.]+ recall@10=[\d.]+",
        last,
    ), last
