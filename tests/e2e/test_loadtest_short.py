"""A small load test in CI: four objects (a spoken video among them) through one process per
worker, and the report it writes checked against what the pipeline did (the full run is
``python -m loadtest.run``).

The figures come from the workers' ``/metrics``, so this also tests those metrics by use:
every stage counts each record it finished once, lag returns to zero, and the event -> indexed
histogram holds one observation per indexed segment.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from loadtest.loadrun.plots import PLOTS
from loadtest.loadrun.report import JSON_KEYS, SECTIONS
from workers.stages import REGISTRY

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
OBJECTS = 4
PIPELINE = REGISTRY.names()


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], str]:
    out = tmp_path_factory.mktemp("loadtest-report")
    result = subprocess.run(
        [sys.executable, "-m", "loadtest.run", "--objects", str(OBJECTS), "--rate", "0"]
        + ["--workers", "decode=1,caption=1,transcribe=1,embed=1,index=1", "--report", str(out), "--timeout", "300"]
        # Four objects take under 2 s on an idle machine (CI once saw 1.8 s): sweep (and refresh
        # lag) often enough that the run's queueing and the caption process's CPU are seen.
        + ["--sample-interval", "0.2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    last = result.stdout.strip().splitlines()[-1]
    return out, json.loads((out / "report.json").read_text()), last


def test_run_line_says_every_object_became_searchable(report: tuple[Path, dict[str, Any], str]) -> None:
    _, fig, last = report
    figures = dict(re.findall(r"(\w+)=(\S+)", last))
    assert last.startswith("loadtest: ")
    assert figures["objects"] == figures["searchable"] == str(OBJECTS)
    assert figures["ok"] == "True" and figures["clean_exit"] == "True"
    assert int(figures["segments"]) == fig["run"]["segments"] >= OBJECTS
    assert int(figures["speech_chunks"]) == fig["run"]["speech_chunks"] >= 1


def test_report_has_every_section_plot_and_key(report: tuple[Path, dict[str, Any], str]) -> None:
    out, fig, _ = report
    md = (out / "report.md").read_text()
    headings = re.findall(r"^## (.+)$", md, flags=re.M)
    assert headings == list(SECTIONS)
    for name in PLOTS:
        path = out / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        with Image.open(path) as image:
            image.verify()
            assert image.size[0] >= 400 and image.size[1] >= 300, name
        assert f"]({name})" in md
    assert set(JSON_KEYS) <= set(fig), set(JSON_KEYS) - set(fig)
    for stage in PIPELINE:
        assert f"| {stage} |" in md, stage
        for section in ("throughput", "stage_latency", "outcomes"):
            assert stage in fig[section], (section, stage)
    for quantiles in (fig["end_to_end"]["segments_from_rows"], fig["end_to_end"]["from_histogram"]):
        assert 0 < quantiles["p50"] <= quantiles["p95"] <= quantiles["p99"]


def test_metrics_agree_with_what_was_submitted(report: tuple[Path, dict[str, Any], str]) -> None:
    _, fig, _ = report
    run, thr = fig["run"], fig["throughput"]
    segments, chunks = run["segments"], run["speech_chunks"]
    visual = segments - chunks
    assert run["videos"] >= 1 and run["images"] >= 1 and run["spoken"] >= 1 and run["speech_seconds"] > 0
    # Each object decoded once; each visual segment captioned and embedded once, each speech
    # chunk transcribed and embedded once (embed's second loop), every one indexed once.
    assert thr["decode"]["records_done"] == OBJECTS
    assert [thr[s]["records_done"] for s in ("caption", "embed", "index")] == [visual, visual, segments]
    assert [thr[s]["records_done"] for s in ("transcribe", "embed-speech")] == [chunks, chunks]
    assert thr["s3-events"]["records_done"] >= OBJECTS  # folder and bucket entries are events too
    for stage in PIPELINE:
        assert not fig["dead_letters"][stage], stage
        assert thr[stage]["records_per_s"] > 0
    assert thr["decode"]["video_seconds"] == pytest.approx(run["media_seconds"], abs=0.5 * run["videos"])
    assert fig["stage_latency"]["caption"]["count"] == visual
    assert fig["stage_latency"]["transcribe"]["count"] == chunks
    # One event -> indexed observation per row written, and the same order of magnitude as the
    # rows' own timestamps (the histogram only knows its buckets).
    assert fig["end_to_end"]["from_histogram"]["count"] == segments == fig["end_to_end"]["segments_from_rows"]["count"]
    assert fig["end_to_end"]["from_histogram"]["mean"] == pytest.approx(
        fig["end_to_end"]["segments_from_rows"]["mean"], rel=0.5, abs=2.0
    )
    assert fig["model"]["caption"]["requests"] >= visual
    assert fig["model"]["caption"]["completion_tokens"] > 0
    assert fig["model"]["transcribe"]["requests"] >= chunks


def test_lag_is_reported_per_group_and_ends_at_zero(report: tuple[Path, dict[str, Any], str]) -> None:
    _, fig, _ = report
    groups = {key.split("/")[0]: v for key, v in fig["lag"].items()}
    assert set(PIPELINE) <= set(groups)
    assert all(v["final"] == 0 for v in groups.values()), fig["lag"]
    # Work queued up somewhere on the way: the caption stage is the slow one.
    assert max(v["max"] for v in groups.values()) > 0
    series = fig["series"]
    assert all(len(values) == len(series["t"]) for values in series["lag"].values())


def test_every_process_was_sampled(report: tuple[Path, dict[str, Any], str]) -> None:
    _, fig, _ = report
    processes = fig["processes"]
    for stage in PIPELINE:
        name = f"{stage}-0"
        assert processes[name]["kind"] == stage
        assert processes[name]["rss_mib_max"] > 50
    assert processes["caption-0"]["cpu_percent_max"] > 0
    assert {"stack:kafka", "stack:redis", "stack:s3", "loadgen"} <= set(processes)
    assert not any(fig["scrape_errors"].values()), fig["scrape_errors"]
