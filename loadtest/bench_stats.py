"""The arithmetic of the stage benchmarks, kept apart from the processes so it can be tested:
histograms read back from ``/metrics``, percentiles, paired ratios, settled assignments."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from workers.runtime.metrics import total

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def histogram_counts(samples: Samples, name: str, **labels: str) -> dict[str, int]:
    """Observations per bucket (not cumulative) of histogram ``name``: ``{"<=2": 3, ...}``.

    ``/metrics`` gives cumulative ``_bucket{le}`` counts; the difference of neighbours is how
    many observations fell in each bucket. Empty buckets are left out.
    """
    want = set(labels.items())
    cumulative: list[tuple[float, float]] = []
    for (sample, lbl), value in samples.items():
        if sample != f"{name}_bucket" or not want <= set(lbl):
            continue
        bound = dict(lbl)["le"]
        cumulative.append((math.inf if bound in ("+Inf", "inf") else float(bound), value))
    cumulative.sort()
    counts: dict[str, int] = {}
    below = 0.0
    for le, value in cumulative:
        if value > below:
            counts["+Inf" if math.isinf(le) else f"<={le:g}"] = round(value - below)
        below = value
    return counts


def histogram_totals(samples: Samples, name: str, **labels: str) -> tuple[int, float]:
    """(observations, sum of observed values) of histogram ``name``."""
    return round(total(samples, f"{name}_count", **labels)), total(samples, f"{name}_sum", **labels)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), interpolated between ranks; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(rank), math.ceil(rank)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


def paired_ratios(baseline_s: Sequence[float], measured_s: Sequence[float]) -> list[float]:
    """Throughput of each measured run relative to its paired baseline run (same work):
    baseline seconds / measured seconds, so 1.0 is parity and below 1 is slower."""
    if len(baseline_s) != len(measured_s):
        raise ValueError(f"{len(baseline_s)} baseline runs but {len(measured_s)} measured runs")
    return [b / m for b, m in zip(baseline_s, measured_s, strict=True)]


def median_or_nan(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def assignment_settled(assignments: Sequence[Sequence[str] | None], partitions: set[str]) -> bool:
    """True when every consumer holds at least one partition, none holds one twice, and
    together they hold them all: the group has finished rebalancing onto every member."""
    if not assignments or any(not a for a in assignments):
        return False
    held = [p for a in assignments for p in (a or [])]
    return len(held) == len(set(held)) and set(held) == partitions
