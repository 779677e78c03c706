"""``report.json`` (every figure and the plotted series) and ``report.md`` (the figures as
tables, the plots inline) in the report directory."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from loadtest.loadrun.plots import write_plots

SECTIONS = (
    "Run",
    "Throughput per stage",
    "End-to-end latency (upload to searchable)",
    "Per-stage latency",
    "Lag per consumer group",
    "CPU and RSS per process",
    "Outcomes",
    "Model",
    "Plots",
)
JSON_KEYS = (
    "run",
    "config",
    "throughput",
    "end_to_end",
    "stage_latency",
    "outcomes",
    "dead_letters",
    "outputs",
    "model",
    "source_bytes_read",
    "lag",
    "processes",
    "scrape_errors",
    "series",
)


def json_safe(value: Any) -> Any:
    """NaN and infinities become null: strict JSON has neither."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def _n(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if value != int(value) or digits == 0 else f"{int(value)}"
    return str(value)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_n(c) if not isinstance(c, str) else c for c in row) + " |" for row in rows]
    return lines + [""]


def _keyed_rows(table: dict[str, dict[str, Any]], columns: tuple[str, ...]) -> list[list[Any]]:
    """One row per entry of ``table``: its name, then the named values."""
    return [[name, *(values.get(c) for c in columns)] for name, values in table.items()]


def _quantile_rows(named: dict[str, dict[str, float]]) -> list[list[Any]]:
    return [
        [name, int(s.get("count", 0)), s.get("p50"), s.get("p95"), s.get("p99"), s.get("mean"), s.get("max")]
        for name, s in named.items()
    ]


def _section(title: str, intro: str, header: list[str], rows: list[list[Any]]) -> list[str]:
    return [f"## {title}", ""] + ([intro, ""] if intro else []) + _table(header, rows)


_QUANTILE_HEADER = ["count", "p50", "p95", "p99", "mean", "max"]


def _labelled(counts: dict[str, float]) -> str:
    return ", ".join(f"{k}={int(v)}" for k, v in sorted(counts.items())) or "-"


def _run_lines(fig: dict[str, Any]) -> list[str]:
    run, cfg = fig["run"], fig["config"]
    return [
        f"## {SECTIONS[0]}",
        "",
        f"- objects: {run['objects']} ({run['videos']} videos, {run['images']} images), "
        f"{run['searchable']} searchable, {run['failed']} failed" + (", **timed out**" if cfg["timed_out"] else ""),
        f"- segments indexed: {run['segments']}, {run['speech_chunks']} of them speech chunks "
        f"({run['spoken']} spoken videos, {_n(run['speech_seconds'], 1)} s of voice); "
        f"media seconds: {_n(run['media_seconds'], 1)}",
        f"- workers (one process each): {cfg['workers']}; models loaded and partitions assigned "
        f"{_n(cfg['workers_ready_s'], 0)} s after the start",
        f"- upload rate asked {_n(cfg['rate'])}/s, achieved {_n(run['upload_rate_per_s'])}/s; seed {cfg['seed']}",
        f"- first upload to last row indexed: {_n(run['duration_s'], 1)} s: "
        f"{_n(run['segments_per_s'], 3)} segments/s, {_n(run['media_seconds_per_s'], 3)} media-seconds/s",
        f"- machine: {cfg['cores']} cores, {_n(run['machine_cpu_percent_mean'], 0)}% busy on average during the run "
        "(other sessions included)",
        "",
    ]


def render_markdown(fig: dict[str, Any]) -> str:
    e2e = fig["end_to_end"]
    md = ["# capstream load test", "", *_run_lines(fig)]
    md += _section(
        SECTIONS[1],
        "Records finished with outcome `done`, from `capstream_records_total`; per second of the whole run, "
        "of the stage's busy window (first to last rise of its counter), and the peak over 5 s. "
        "Video seconds from `capstream_video_seconds_decoded_total`.",
        ["stage", "records done", "records/s (run)", "records/s (busy)", "peak records/s", "video s", "video s/s"],
        [
            [st, t["records_done"], t["records_per_s"], t["records_per_s_busy"], t["peak_records_per_s"],
             t["video_seconds"], t["video_seconds_per_s"]]
            for st, t in fig["throughput"].items()
        ],
    )  # fmt: skip
    md += _section(
        SECTIONS[2],
        "Seconds. Rows: each index row's `indexed_at` minus the time S3 acknowledged the object's upload "
        "(per segment, and per object: its last segment). Histogram: `capstream_event_to_indexed_seconds` "
        "(object event time to row written; quantiles interpolated inside its buckets).",
        ["measure", *_QUANTILE_HEADER],
        _quantile_rows(
            {
                "segments (index rows)": e2e["segments_from_rows"],
                "objects (index rows)": e2e["objects_from_rows"],
                "segments (/metrics histogram)": e2e["from_histogram"],
            }
        ),
    )
    md += _section(
        SECTIONS[3],
        "`capstream_record_processing_seconds`: from taking a record to finishing it (seconds).",
        ["stage", *_QUANTILE_HEADER],
        _quantile_rows(fig["stage_latency"]),
    )
    md += _section(
        SECTIONS[4],
        "`capstream_consumer_lag` summed over partitions (records); see lag.png.",
        ["stage/group", "max", "mean", "at the end"],
        _keyed_rows(fig["lag"], ("max", "mean", "final")),
    )
    md += _section(
        SECTIONS[5],
        "psutil, every second during the run (process and its children); CPU in % of one core.",
        ["process", "kind", "CPU % mean", "CPU % max", "RSS MiB mean", "RSS MiB max"],
        _keyed_rows(fig["processes"], ("kind", "cpu_percent_mean", "cpu_percent_max", "rss_mib_mean", "rss_mib_max")),
    )
    errors = {k: v for k, v in fig["scrape_errors"].items() if v}
    md += _section(
        SECTIONS[6],
        f"Failed scrapes: {errors}" if errors else "",
        ["stage", "outcomes", "dead letters", "outputs"],
        [
            [st, _labelled(fig["outcomes"][st]), _labelled(fig["dead_letters"][st]), _labelled(fig["outputs"][st])]
            for st in fig["outcomes"]
        ],
    )
    md += _section(
        SECTIONS[7],
        "",
        ["stage", "requests", "prompt tokens", "completion tokens", "engine steps", "mean batch"],
        _keyed_rows(
            fig["model"], ("requests", "prompt_tokens", "completion_tokens", "engine_steps", "mean_engine_batch")
        ),
    )
    md += [f"## {SECTIONS[8]}", ""]
    md += [
        "![lag over time per consumer group](lag.png)",
        "![throughput over time per stage](throughput.png)",
        "![end-to-end latency CDF](latency_cdf.png)",
        "![CPU and RSS per process](resources.png)",
        "",
    ]
    return "\n".join(md)


def write_report(fig: dict[str, Any], directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    safe = json_safe(fig)
    (directory / "report.json").write_text(json.dumps(safe, indent=1) + "\n")
    (directory / "report.md").write_text(render_markdown(safe))
    return [directory / "report.json", directory / "report.md", *write_plots(fig["series"], directory)]
