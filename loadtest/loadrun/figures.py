"""The load test's numbers, from the sweeps of ``/metrics`` and psutil and from the objects'
own timestamps.

Counters and histograms are summed over the processes of a stage (a counter that a scrape
missed keeps its last value). Quantiles of a histogram are interpolated inside its bucket, as
PromQL's ``histogram_quantile`` does: they are as coarse as the buckets (0.5 s, 1 s, 2.5 s, ...).
The exact end-to-end figures come from the index rows' ``indexed_at`` against the upload time.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from loadtest.loadrun.feed import ObjectRecord
from loadtest.loadrun.sampler import Samples, Sweep
from loadtest.loadrun.workers import STAGE_ORDER
from workers.runtime.metrics import total

RECORDS = "capstream_records_total"
PROCESSING = "capstream_record_processing_seconds"
LAG = "capstream_consumer_lag"
EVENT_TO_INDEXED = "capstream_event_to_indexed_seconds"
QUANTILES = (0.5, 0.95, 0.99)
RATE_WINDOW_S = 5.0  # throughput over time: the counter's rise over the last 5 s


def quantile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    pos = q * (len(ordered) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summary(values: Sequence[float]) -> dict[str, float]:
    out: dict[str, float] = {"count": float(len(values))}
    if values:
        out |= {f"p{round(q * 100)}": quantile(values, q) for q in QUANTILES}
        out |= {"mean": sum(values) / len(values), "max": max(values)}
    return out


def stage_view(sweep: Sweep, carried: dict[str, Samples]) -> Samples:
    """Every worker's samples at this sweep, a missed scrape filled by the worker's last one."""
    carried.update(sweep.metrics)
    merged: Samples = defaultdict(float)
    for samples in carried.values():
        for key, value in samples.items():
            merged[key] += value
    return merged


def merged_views(sweeps: Sequence[Sweep]) -> list[tuple[float, Samples]]:
    """(t, samples summed over all workers) per sweep; labels keep stages apart."""
    carried: dict[str, Samples] = {}
    return [(s.t, stage_view(s, carried)) for s in sweeps]


def stages_seen(samples: Samples) -> list[str]:
    found = {dict(labels).get("stage", "") for name, labels in samples if name == RECORDS}
    found |= {dict(labels).get("stage", "") for name, labels in samples if name == f"{PROCESSING}_count"}
    found.discard("")
    order = {s: i for i, s in enumerate(STAGE_ORDER)}
    return sorted(found, key=lambda s: (order.get(s, len(order)), s))


def histogram(samples: Samples, name: str, **labels: str) -> tuple[list[tuple[float, float]], float, float]:
    """(cumulative buckets [(le, count)], count, sum) of one histogram, summed over matches."""
    buckets: dict[float, float] = defaultdict(float)
    want = labels.items()
    for (n, lbl), value in samples.items():
        d = dict(lbl)
        if n == f"{name}_bucket" and want <= d.items():
            buckets[float(d["le"])] += value
    return sorted(buckets.items()), total(samples, f"{name}_count", **labels), total(samples, f"{name}_sum", **labels)


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """PromQL's ``histogram_quantile``: linear inside the bucket holding rank q * count."""
    if not buckets or buckets[-1][1] <= 0:
        return math.nan
    rank = q * buckets[-1][1]
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return prev_le  # beyond the last finite bound: its bound is all we know
            inside = count - prev_count
            return prev_le + (le - prev_le) * ((rank - prev_count) / inside if inside else 1.0)
        prev_le, prev_count = le, count
    return prev_le


def histogram_summary(samples: Samples, name: str, **labels: str) -> dict[str, float]:
    buckets, count, total_s = histogram(samples, name, **labels)
    out: dict[str, float] = {"count": count}
    if count:
        out |= {f"p{round(q * 100)}": histogram_quantile(q, buckets) for q in QUANTILES}
        out["mean"] = total_s / count
    return out


def label_values(samples: Samples, name: str, label: str, **labels: str) -> dict[str, float]:
    """``label`` value -> summed value, over the samples of ``name`` that match ``labels``."""
    out: dict[str, float] = defaultdict(float)
    for (n, lbl), value in samples.items():
        d = dict(lbl)
        if n == name and labels.items() <= d.items() and label in d:
            out[d[label]] += value
    return dict(out)


def counter_series(views: Sequence[tuple[float, Samples]], name: str, **labels: str) -> list[float]:
    return [total(samples, name, **labels) for _, samples in views]


def rate_series(times: Sequence[float], values: Sequence[float], window_s: float = RATE_WINDOW_S) -> list[float]:
    """Per-second rise of a counter over the trailing ``window_s`` at each sample."""
    out: list[float] = []
    j = 0
    for i, t in enumerate(times):
        while times[j] < t - window_s:
            j += 1
        dt = t - times[j]
        out.append((values[i] - values[j]) / dt if dt > 0 else 0.0)
    return out


def busy_window(times: Sequence[float], values: Sequence[float]) -> float:
    """Seconds from the sweep before the counter first rose to the sweep where it last rose."""
    rises = [i for i in range(1, len(values)) if values[i] > values[i - 1]]
    return times[rises[-1]] - times[rises[0] - 1] if rises else 0.0


def lag_groups(samples: Iterable[tuple[str, tuple[tuple[str, str], ...]]]) -> list[tuple[str, str]]:
    """(stage, group) of every lag gauge seen."""
    found = {(dict(lbl)["stage"], dict(lbl)["group"]) for name, lbl in samples if name == LAG}
    order = {s: i for i, s in enumerate(STAGE_ORDER)}
    return sorted(found, key=lambda sg: (order.get(sg[0], len(order)), sg))


def process_figures(sweeps: Sequence[Sweep], kinds: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Per process: mean and peak CPU (% of one core) and RSS (MiB) over the sweeps."""
    out: dict[str, dict[str, Any]] = {}
    for name, kind in kinds.items():
        usage = [s.usage[name] for s in sweeps if name in s.usage]
        if not usage:
            continue
        cpu = [u.cpu_percent for u in usage[1:]] or [0.0]  # the first reading has no interval behind it
        rss = [u.rss_bytes / 2**20 for u in usage]
        out[name] = {
            "kind": kind,
            "cpu_percent_mean": sum(cpu) / len(cpu),
            "cpu_percent_max": max(cpu),
            "rss_mib_mean": sum(rss) / len(rss),
            "rss_mib_max": max(rss),
        }
    return out


def per_stage(final: Samples, stages: Sequence[str]) -> dict[str, Any]:
    """Latency, outcomes, dead letters, outputs and model use of each stage (final counters)."""

    def by(name: str, label: str) -> dict[str, dict[str, float]]:
        return {stage: label_values(final, name, label, stage=stage) for stage in stages}

    def model(stage: str) -> dict[str, float]:
        steps = total(final, "capstream_engine_batch_size_count", stage=stage)
        return {
            "requests": total(final, "capstream_model_requests_total", stage=stage),
            "prompt_tokens": total(final, "capstream_tokens_total", stage=stage, kind="prompt"),
            "completion_tokens": total(final, "capstream_tokens_total", stage=stage, kind="completion"),
            "engine_steps": steps,
            "mean_engine_batch": total(final, "capstream_engine_batch_size_sum", stage=stage) / steps if steps else 0.0,
        }

    return {
        "stage_latency": {stage: histogram_summary(final, PROCESSING, stage=stage) for stage in stages},
        "outcomes": by(RECORDS, "outcome"),
        "dead_letters": by("capstream_dead_letters_total", "reason"),
        "outputs": by("capstream_output_records_total", "topic"),
        "model": {st: model(st) for st in stages if total(final, "capstream_model_requests_total", stage=st)},
        "source_bytes_read": total(final, "capstream_source_bytes_read_total"),
    }


def throughput(views: Sequence[tuple[float, Samples]], stages: Sequence[str], duration: float) -> dict[str, Any]:
    times = [t for t, _ in views]
    out: dict[str, dict[str, float]] = {}
    for stage in stages:
        done = counter_series(views, RECORDS, stage=stage, outcome="done")
        video = counter_series(views, "capstream_video_seconds_decoded_total", stage=stage)
        busy = busy_window(times, done)
        out[stage] = {
            "records_done": done[-1],
            "records_per_s": done[-1] / duration,
            "busy_s": busy,
            "records_per_s_busy": done[-1] / busy if busy else 0.0,
            "peak_records_per_s": max(rate_series(times, done), default=0.0),
            "video_seconds": video[-1],
            "video_seconds_per_s": video[-1] / duration,
        }
    return out


def compute(
    sweeps: Sequence[Sweep],
    records: Sequence[ObjectRecord],
    sampler_started_wall: float,
    process_kinds: dict[str, str],
) -> dict[str, Any]:
    """Every figure of the report (``report.json``), series for the plots included."""
    views = merged_views(sweeps)
    times = [t for t, _ in views]
    final = views[-1][1] if views else {}
    stages = stages_seen(final)
    searchable = [r for r in records if r.searchable]
    first_upload = min((r.uploaded_at - r.upload_s for r in records), default=sampler_started_wall)
    last_upload = max((r.uploaded_at for r in records), default=first_upload)
    last_indexed = max((t for r in searchable for t in r.indexed_at), default=first_upload)
    duration = max(last_indexed - first_upload, 1e-9)
    run_from, run_to = first_upload - sampler_started_wall, last_indexed - sampler_started_wall
    run_sweeps = [s for s in sweeps if run_from <= s.t <= run_to]

    segment_latency = [t - r.uploaded_at for r in searchable for t in r.indexed_at]
    object_latency = [max(r.indexed_at) - r.uploaded_at for r in searchable if r.indexed_at]
    lag_series = {f"{st}/{group}": counter_series(views, LAG, stage=st, group=group) for st, group in lag_groups(final)}
    segments = sum(r.segments_total or 0 for r in searchable)
    speech_chunks = sum(r.speech_rows for r in searchable)
    media_s = sum(r.item.media_seconds for r in searchable)
    speech_s = sum(r.item.speech_seconds for r in searchable)
    return {
        "run": {
            "objects": len(records),
            "videos": sum(r.item.is_video for r in records),
            "images": sum(not r.item.is_video for r in records),
            "searchable": len(searchable),
            "failed": sum(r.state in ("failed", "skipped") for r in records),
            "segments": segments,  # visual segments and speech chunks: one index row each
            "speech_chunks": speech_chunks,
            "spoken": sum(r.item.speech_seconds > 0 for r in records),
            "media_seconds": media_s,
            "speech_seconds": speech_s,
            "duration_s": duration,
            "upload_rate_per_s": (len(records) - 1) / (last_upload - first_upload) if len(records) > 1 else 0.0,
            "segments_per_s": segments / duration,
            "media_seconds_per_s": media_s / duration,
            "machine_cpu_percent_mean": sum(s.machine_cpu_percent for s in run_sweeps) / max(len(run_sweeps), 1),
            "sweeps": len(sweeps),
        },
        "throughput": throughput(views, stages, duration),
        "end_to_end": {
            "segments_from_rows": summary(segment_latency),
            "objects_from_rows": summary(object_latency),
            "from_histogram": histogram_summary(final, EVENT_TO_INDEXED),
        },
        **per_stage(final, stages),
        "lag": {
            key: {"max": max(series, default=0.0), "mean": sum(series) / max(len(series), 1), "final": series[-1]}
            for key, series in lag_series.items()
        },
        "processes": process_figures(run_sweeps or list(sweeps), process_kinds),
        "series": {
            "t": times,
            "lag": lag_series,
            "records_per_s": {st: rate_series(times, counter_series(views, RECORDS, stage=st, outcome="done"))
                              for st in stages},
            "cpu_percent": {n: [s.usage[n].cpu_percent if n in s.usage else 0.0 for s in sweeps]
                            for n in process_kinds},
            "rss_mib": {n: [s.usage[n].rss_bytes / 2**20 if n in s.usage else 0.0 for s in sweeps]
                        for n in process_kinds},
            "segment_latency_s": sorted(segment_latency),
            "event_to_indexed_buckets": [
                ("+Inf" if math.isinf(le) else repr(le), count) for le, count in histogram(final, EVENT_TO_INDEXED)[0]
            ],
            "first_upload_t": run_from,
            "last_indexed_t": run_to,
        },
    }  # fmt: skip
