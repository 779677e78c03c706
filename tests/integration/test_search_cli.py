"""``capstream search`` as a user runs it: a subprocess with the offline embed model (the real
in-process vLLM MiniLM engine) against a LanceDB table in a tmp dir."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.search_fixtures import DOCS, TABLE, build_table
from workers.offline_profile import offline_env

pytestmark = pytest.mark.e2e  # the real vLLM MiniLM engine embeds the queries

ROOT = Path(__file__).resolve().parents[2]
CAT = next(d for d in DOCS if d.key == "clips/cat.mp4" and d.index == 0)


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("index")
    build_table(path)
    return path


def capstream(index: Path, *args: str, home: Path, command: str = "search") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAPSTREAM_", "AWS_"))}
    env |= offline_env() | {
        "CAPSTREAM_HOME": str(home),  # no recorded stack: nothing but the index is needed
        "CAPSTREAM_INDEX_URI": str(index),
        "CAPSTREAM_INDEX_TABLE": TABLE,
        "CAPSTREAM_LOG_LEVEL": "WARNING",
    }
    return subprocess.run(
        [sys.executable, "-m", "workers.cli.main", command, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_json_hits_with_the_vllm_engine_and_an_over_long_query(index_dir: Path, tmp_path: Path) -> None:
    # Far over MiniLM's 256 tokens: cut to the limit (else the engine would refuse it), said on stderr.
    long_q = "a kitten playing with yarn " + "very " * 3000
    out = capstream(index_dir, long_q, "--json", "--k", "3", home=tmp_path)
    assert out.returncode == 0, out.stderr
    hits = json.loads(out.stdout)
    assert isinstance(hits, list) and len(hits) == 3
    assert set(hits[0]) == {
        "object_id",
        "segment_id",
        "uri",
        "bucket",
        "key",
        "start_s",
        "end_s",
        "caption",
        "score",
        "modality",
        "language",
        "collection",
        "page_number",
        "also",
    }
    assert hits[0]["segment_id"] == CAT.segment_id and hits[0]["start_s"] == 0.0 and hits[0]["end_s"] == 5.0
    assert "query truncated to the model's limit (256 tokens)" in out.stderr


def test_plain_table_with_time_ranges_and_filters(index_dir: Path, tmp_path: Path) -> None:
    # Text mode: BM25 only, no engine to build.
    out = capstream(
        index_dir, "chef kitchen", "--mode", "text", "--per-object", "1", "--bucket", "media", home=tmp_path
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["score", "time", "object", "caption"]
    assert sum("media/long/kitchen.mp4" in line for line in lines) == 1  # --per-object 1
    assert any("media/clips/cooking-short.mp4" in line for line in lines)
    assert all(re.search(r"\d:\d\d\.\d-\d:\d\d\.\d", line) for line in lines[1:])  # time ranges
    assert not any("archive/" in line for line in lines)


@pytest.mark.parametrize("query", ["", "   "])
def test_empty_query_is_one_line_and_exit_2(index_dir: Path, tmp_path: Path, query: str) -> None:
    out = capstream(index_dir, query, home=tmp_path)
    assert out.returncode == 2
    assert out.stdout == "" and out.stderr.strip() == "capstream: empty query"


def test_no_index_yet_means_no_hits(tmp_path: Path) -> None:
    out = capstream(tmp_path / "empty-index", "anything", "--json", home=tmp_path)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [] and "nothing is indexed yet" in out.stderr
    assert "Traceback" not in out.stderr


def test_ask_answers_with_citations_of_retrieved_moments_only(index_dir: Path, tmp_path: Path) -> None:
    """``capstream ask`` as a user runs it: the offline MiniLM and tiny Qwen3-VL engines in one
    process; the JSON answer cites only moments it lists, and an empty question exits 2."""
    out = capstream(index_dir, "Where is the kitten?", "--json", "--k", "3", home=tmp_path, command="ask")
    assert out.returncode == 0, out.stderr[-3000:]
    answer = json.loads(out.stdout)
    ids = {m["id"] for m in answer["moments"]}
    assert 1 <= len(ids) <= 3 and {c["id"] for c in answer["citations"]} <= ids
    assert answer["timings"]["visual_tokens"] > 0
    empty = capstream(index_dir, "  ", home=tmp_path, command="ask")
    assert empty.returncode == 2 and "the question is empty" in empty.stderr
