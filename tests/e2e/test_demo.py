"""The README's first command: ``capstream demo`` on the shipped samples, fully offline."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from workers.samples import sample_paths

pytestmark = pytest.mark.e2e


def test_demo_json_reports_every_sample_done() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "workers.cli.main", "demo", "--json"], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-4000:]
    reports = json.loads(result.stdout)
    assert sorted(r["source"] for r in reports) == sorted(p.name for p in sample_paths())
    for report in reports:
        assert report["state"] == "done" and report["error"] is None
        assert report["segments"], report
        for seg in report["segments"]:
            assert {"start_s", "end_s", "caption", "embedding_model", "embedding_dim"} <= seg.keys()
            assert seg["end_s"] >= seg["start_s"] and seg["embedding_dim"] == 384
    scenes = next(r for r in reports if r["source"] == "four-scenes.mp4")
    bounds = [t for s in scenes["segments"] for t in (s["start_s"], s["end_s"])]
    assert bounds == pytest.approx([0.0, 2.5, 2.5, 5.0, 5.0, 7.5, 7.5, 10.0], abs=0.05)
