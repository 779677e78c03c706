"""The load test's arithmetic: histogram quantiles as PromQL computes them, counter rates, and
counters summed over worker processes when a scrape is missed."""

from __future__ import annotations

import json
import math

import pytest

from loadtest.loadrun.figures import busy_window, histogram_quantile, merged_views, quantile, rate_series
from loadtest.loadrun.report import json_safe
from loadtest.loadrun.sampler import Sweep

DONE = ("capstream_records_total", (("outcome", "done"), ("stage", "caption")))


def test_histogram_quantile_interpolates_inside_the_bucket() -> None:
    # 10 observations: 4 in (0, 1], 4 in (1, 5], 2 in (5, 10].
    buckets = [(1.0, 4.0), (5.0, 8.0), (10.0, 10.0), (math.inf, 10.0)]
    assert histogram_quantile(0.4, buckets) == pytest.approx(1.0)
    assert histogram_quantile(0.5, buckets) == pytest.approx(2.0)  # rank 5: a quarter into (1, 5]
    assert histogram_quantile(0.9, buckets) == pytest.approx(7.5)
    assert math.isnan(histogram_quantile(0.5, [(1.0, 0.0), (math.inf, 0.0)]))


def test_histogram_quantile_beyond_the_last_bound_is_that_bound() -> None:
    assert histogram_quantile(0.99, [(1.0, 1.0), (math.inf, 10.0)]) == 1.0


def test_exact_quantile_and_rates() -> None:
    assert quantile([3.0, 1.0, 2.0, 4.0], 0.5) == pytest.approx(2.5)
    times = [0.0, 1.0, 2.0, 3.0, 4.0]
    counts = [0.0, 0.0, 2.0, 6.0, 6.0]
    assert rate_series(times, counts, window_s=2.0) == pytest.approx([0.0, 0.0, 1.0, 3.0, 2.0])
    assert busy_window(times, counts) == pytest.approx(2.0)  # from t=1 (before the first rise) to t=3


def test_a_missed_scrape_keeps_the_workers_last_counters() -> None:
    sweeps = [
        Sweep(0.0, {"caption-0": {DONE: 1.0}, "caption-1": {DONE: 2.0}}),
        Sweep(1.0, {"caption-0": {DONE: 3.0}}),  # caption-1 did not answer
    ]
    assert [view[DONE] for _, view in merged_views(sweeps)] == [3.0, 5.0]


def test_report_json_has_no_nan() -> None:
    text = json.dumps(json_safe({"p50": math.nan, "le": [math.inf, 1.0]}), allow_nan=False)
    assert json.loads(text) == {"p50": None, "le": [None, 1.0]}
