"""The result view's row holds captions and ids, never a vector (workers/state/results.py).

At 4096 dimensions an embedding's JSON is ~80 KB; its row must stay under 1 KB, parse both an
embedding record and a row an older version stored (with its vector) without keeping the
vector. Also the reply rule of reconcile's pipelined batches (workers/state/redis_batch.py).
"""

from __future__ import annotations

import random

from schemas.embeddings import Embedding
from workers.state.redis_batch import counts
from workers.state.results import ResultRow

DIM = 4096


def _embedding() -> Embedding:
    rng = random.Random(1)
    return Embedding(
        object_id="o", segment_id="s", segment_index=3, source_uri="s3://media/a.mp4", start_s=6.0, end_s=8.0,
        embedding_id="e", caption="a dog runs on a beach", caption_model="qwen3-vl", model="qwen3-embedding",
        dim=DIM, vector=[rng.uniform(-1, 1) for _ in range(DIM)], thumbnail=b"\xff\xd8" * 100,
    )  # fmt: skip


def test_a_row_holds_no_vector_and_is_small() -> None:
    embedding = _embedding()
    row = ResultRow.of(embedding)
    stored = row.model_dump_json()
    assert "vector" not in ResultRow.model_fields and "thumbnail" not in ResultRow.model_fields
    assert "vector" not in stored and len(stored) < 1024, len(stored)
    assert len(embedding.model_dump_json()) > 60_000  # what a row used to be
    assert (row.caption, row.segment_index, row.model, row.dim) == ("a dog runs on a beach", 3, "qwen3-embedding", DIM)


def test_a_row_parses_an_embedding_record_and_an_old_row() -> None:
    embedding = _embedding()
    for stored in (embedding.model_dump_json(), embedding.model_dump_json(exclude={"thumbnail"})):
        row = ResultRow.model_validate_json(stored)
        assert row == ResultRow.of(embedding)
        assert "vector" not in row.model_dump()


def test_which_replies_count() -> None:
    assert counts(1) and counts(True) and counts(b"newer") and counts("newer")
    assert not counts(0) and not counts(None) and not counts(b"current") and not counts(b"stale")
