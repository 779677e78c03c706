"""The report's PNGs (matplotlib, Agg: no display): lag over time per consumer group,
throughput over time per stage, the event -> searchable latency CDF, CPU and RSS per process."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402

PLOTS = ("lag.png", "throughput.png", "latency_cdf.png", "resources.png")


def _mark_run(ax: Axes, series: dict[str, Any]) -> None:
    ax.axvline(series["first_upload_t"], color="grey", linestyle=":", linewidth=1)
    ax.axvline(series["last_indexed_t"], color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("seconds since sampling began (dotted: first upload, last row indexed)")
    ax.grid(alpha=0.3)


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_lines(series: dict[str, Any], key: str, ylabel: str, title: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(9, 4))
    for name, values in series[key].items():
        ax.plot(series["t"], values, label=name)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    _mark_run(ax, series)
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_lag(series: dict[str, Any], path: Path) -> None:
    _plot_lines(series, "lag", "records (high watermark - committed)", "Consumer lag per group", path)


def plot_throughput(series: dict[str, Any], path: Path) -> None:
    _plot_lines(series, "records_per_s", "records done / s (trailing 5 s)", "Throughput per stage", path)


def plot_latency_cdf(series: dict[str, Any], path: Path) -> None:
    """Exact per-segment latencies as a step CDF; the histogram's cumulative buckets as points."""
    fig, ax = plt.subplots(figsize=(7, 4))
    values = series["segment_latency_s"]
    if values:
        n = len(values)
        fractions = [0.0, *((i + 1) / n for i in range(n))]
        ax.step([values[0], *values], fractions, where="post", label="segments (index rows)")
    buckets = [(float(le), c) for le, c in series["event_to_indexed_buckets"] if not math.isinf(float(le))]
    count = series["event_to_indexed_buckets"][-1][1] if series["event_to_indexed_buckets"] else 0
    if buckets and count:
        ax.plot([le for le, _ in buckets], [c / count for _, c in buckets], "o--", label="histogram buckets (/metrics)")
        if values:
            ax.set_xlim(0, max(values[-1], 1.0) * 1.2)
    ax.set_xlabel("upload -> searchable (s)")
    ax.set_ylabel("fraction of segments")
    ax.set_ylim(0, 1.02)
    ax.set_title("End-to-end latency CDF")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_resources(series: dict[str, Any], path: Path) -> None:
    fig, (cpu_ax, rss_ax) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for name, values in series["cpu_percent"].items():
        cpu_ax.plot(series["t"], values, label=name)
    for name, values in series["rss_mib"].items():
        rss_ax.plot(series["t"], values, label=name)
    cpu_ax.set_ylabel("CPU % (of one core)")
    cpu_ax.set_title("CPU and RSS per process")
    cpu_ax.grid(alpha=0.3)
    rss_ax.set_ylabel("RSS (MiB)")
    _mark_run(rss_ax, series)
    cpu_ax.legend(fontsize=7, ncol=3)
    _save(fig, path)


def write_plots(series: dict[str, Any], directory: Path) -> list[Path]:
    paths = [directory / name for name in PLOTS]
    for plot, path in zip((plot_lag, plot_throughput, plot_latency_cdf, plot_resources), paths, strict=True):
        plot(series, path)
    return paths
