"""A reduced retrieval evaluation: corpus captions through the real embed and index stages
(vLLM on CPU, LanceDB) and every query through `Searcher.search` in each mode; checks the
report's shape, not the figures (the full run is `python -m loadtest.search_eval`)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e


def test_reduced_search_eval_reports_every_mode() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "loadtest.search_eval", "--limit", "3"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    for mode in ("hybrid", "vector", "text"):
        assert any(re.match(rf"all \(6\)\s+{mode}\s", line) for line in lines), result.stdout
    assert re.fullmatch(
        r"search_eval: segments=\d+ queries=6 recall@5 hybrid=[\d.]+ vector=[\d.]+ text=[\d.]+ mrr hybrid=[\d.]+",
        lines[-1],
    ), lines[-1]
