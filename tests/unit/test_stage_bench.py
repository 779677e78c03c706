"""The stage benchmark's arithmetic: histograms read back from /metrics, percentiles, paired
ratios, settled assignments, log parsing and the verdicts of its table."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from loadtest.bench_stats import (
    assignment_settled,
    histogram_counts,
    histogram_totals,
    paired_ratios,
    percentile,
)
from loadtest.caption_bench import placed_segments
from loadtest.fresh_frames import fresh_segments
from loadtest.stage_bench import caption_rows, format_table, scaling_rows, verdict
from loadtest.worker_process import WorkerProcess, event_time
from workers.runtime.metrics import scrape


def _batch_samples(sizes: list[int]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    hist = Histogram("capstream_engine_batch_size", "x", ["stage"], buckets=(1, 2, 4, 8, 16), registry=registry)
    for size in sizes:
        hist.labels("caption").observe(size)
    hist.labels("embed").observe(3)
    return scrape(generate_latest(registry).decode())


def test_histogram_counts_are_per_bucket_not_cumulative() -> None:
    samples = _batch_samples([16, 8, 16, 7, 20])
    assert histogram_counts(samples, "capstream_engine_batch_size", stage="caption") == {
        "<=8": 2,
        "<=16": 2,
        "+Inf": 1,
    }
    assert histogram_totals(samples, "capstream_engine_batch_size", stage="caption") == (5, 67.0)
    assert histogram_counts(samples, "capstream_engine_batch_size", stage="embed") == {"<=4": 1}


def test_histogram_of_nothing_is_empty() -> None:
    assert histogram_counts({}, "capstream_engine_batch_size", stage="caption") == {}
    assert histogram_totals({}, "capstream_engine_batch_size", stage="caption") == (0, 0.0)


def test_percentile_interpolates_and_handles_edges() -> None:
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 95) == pytest.approx(4.8)
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))


def test_paired_ratio_is_baseline_time_over_measured_time() -> None:
    # The stage took 25 s where the engine took 20 s: 0.8x the engine's throughput.
    assert paired_ratios([20.0, 10.0], [25.0, 10.0]) == [0.8, 1.0]
    with pytest.raises(ValueError):
        paired_ratios([1.0], [1.0, 2.0])


def test_assignment_settled_needs_every_member_and_every_partition_once() -> None:
    want = {"t/0", "t/1", "t/2", "t/3"}
    assert assignment_settled([["t/0", "t/1"], ["t/2", "t/3"]], want)
    assert not assignment_settled([["t/0", "t/1", "t/2", "t/3"], None], want)  # second not joined
    assert not assignment_settled([["t/0", "t/1", "t/2", "t/3"], []], want)  # second holds nothing
    assert not assignment_settled([["t/0", "t/1"], ["t/1", "t/2", "t/3"]], want)  # old and new overlap
    assert not assignment_settled([["t/0"], ["t/2", "t/3"]], want)  # t/1 unheld
    assert not assignment_settled([], want)


def test_worker_log_is_read_as_json_lines_among_other_output(tmp_path: Path) -> None:
    log = tmp_path / "caption-0.log"
    lines = [
        "INFO 11-30 13:12:10 [llm.py:1] vLLM says hello",
        '{"stage": "caption", "partitions": ["s/0", "s/1"], "event": "partitions_assigned", '
        '"level": "info", "timestamp": "2026-11-30T13:00:00.250000Z"}',
        '{"event": "segment_captioned", "timestamp": "2026-11-30T13:00:01Z"}',
        '{"broken json "partitions_assigned"',
    ]
    log.write_text("\n".join(lines) + '\n{"event": "metrics_serving", "url": "http://127.0.0.1:9/metrics"')
    worker = WorkerProcess("caption", 0, log)
    [assigned] = worker.events("partitions_assigned")
    assert assigned["partitions"] == ["s/0", "s/1"] and worker.assignment() == ["s/0", "s/1"]
    assert event_time(assigned) == pytest.approx(1796043600.25)
    assert worker.counts["segment_captioned"] == 1
    assert worker.metrics_url is None  # a half-written line waits until it is whole
    with log.open("a") as fh:
        fh.write("}\n")
    assert worker.metrics_url == "http://127.0.0.1:9/metrics"


def test_fresh_segments_differ_between_seeds_and_repeat_within_one() -> None:
    a, b, again = fresh_segments(1, 2, 2), fresh_segments(2, 2, 2), fresh_segments(1, 2, 2)
    jpegs = lambda segs: [f.jpeg for s in segs for f in s.frames]  # noqa: E731
    assert not set(jpegs(a)) & set(jpegs(b))  # no frame the engine has cached from another run
    assert len(set(jpegs(a))) == 4  # nor within one run
    assert jpegs(a) == jpegs(again)
    assert [s.segment_id for s in a] != [s.segment_id for s in b]


def test_placed_segments_keep_an_object_on_one_partition_and_spread_objects() -> None:
    segments = fresh_segments(1, 2, 1) + fresh_segments(2, 2, 1) + fresh_segments(3, 1, 1)
    placed = placed_segments(segments, partitions=2)
    assert [p.partition for p in placed] == [0, 0, 1, 1, 0]
    assert placed[0].key == segments[0].object_id.encode()


def test_verdicts_and_table() -> None:
    assert verdict(0.96, 0.95) == "met"
    assert verdict(0.76, 0.95) == "MISSED"
    assert verdict(4.0, 5.0, higher_is_better=False) == "met"
    assert verdict(math.nan, 5.0) == "n/a"
    rows = caption_rows([20.0, 22.0], [25.0, 22.0], 24, [4, None], [30.0, 30.0], [40.0, 20.0])
    by_measure = {r.measure: r for r in rows}
    assert by_measure["caption stage / bare engine"].value == pytest.approx(0.9)
    assert by_measure["caption stage / bare engine"].verdict == "MISSED"
    assert by_measure["caption stage / bare engine, CPU"].value == pytest.approx((0.75 + 1.5) / 2)
    assert by_measure["stage time beyond the engine"].value == pytest.approx(5000 / 24 / 2)
    assert by_measure["engine steps of the worker"].value == 4
    scaling = scaling_rows([10.0, 12.0], [19.0, 24.0], True, "video-s/s", [0.1, 0.1], [0.1, 0.125])
    by_measure = {r.measure: r for r in scaling}
    assert by_measure["decode scaling 2 vs 1"].value == pytest.approx(1.95)
    assert by_measure["decode scaling 2 vs 1"].verdict == "met"
    # Two workers spent 0.1 and 0.125 CPU s per video second where one spent 0.1: 2x and 1.6x.
    assert by_measure["decode scaling if cores were idle"].value == pytest.approx(1.8)
    table = format_table(rows + scaling)
    assert "caption stage / bare engine" in table and "MISSED" in table and "1.95" in table
