"""What each stage costs on top of its model, and how decode scales per core, side by side.

    python -m loadtest.stage_bench [--sections caption,overhead,decode] [--pairs 3]
        [--caption-mode warm|prefill] [--segments 24] [--frames 4] [--decode-objects 8]
        [--decode-seconds 20] [--json FILE]

Starts a local stack (Tansu, Redis, SeaweedFS) in a temporary directory and runs:

- caption: the caption stage vs the bare engine (``loadtest.caption_bench``). Runs alternate,
  engine then stage, ``--pairs`` times, each on freshly generated frames (vLLM's prefix cache
  would make repeated frames cheap); ratio = stage segments/s / engine segments/s per pair,
  the median reported. Goal >= 0.95. ``warm`` keeps one worker for every stage run (its
  engine loads once, so a pair's runs are seconds apart and meet the same load; segments are
  produced as a burst into the topic it polls); ``prefill`` starts a fresh worker on a filled
  topic per run (the backlog case, minutes apart). Also the worker's engine steps and batch
  sizes, from its ``/metrics``, the CPU seconds of each side (steadier than wall time on a
  shared machine), and (stage s - engine s) / segments: the time the stage adds.
- overhead: the caption stage with an instant backend, in this process, real broker and
  Redis: per-segment time from parse to delivered, one segment in flight (p50 goal <= 5 ms),
  and wall time per segment with the worker's default in-flight window.
- decode: one decode worker vs two, pinned (``taskset -c i``, ``CAPSTREAM_DECODE_THREADS=1``)
  and unpinned (default threads), interleaved ``--decode-repeat`` times; ratio of objects/s
  (goal >= 1.8 pinned).

The machine is shared: the 1-minute load average is printed at the start and kept with every
run. Prints a table; ``--json FILE`` writes every run and the summary.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import math
import os
import pstats
import signal
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from loadtest.bench_stats import median_or_nan, paired_ratios

CAPTION_GOAL = 0.95
OVERHEAD_P50_GOAL_MS = 5.0
PINNED_SCALING_GOAL = 1.8
# The engine code the caption worker runs: recorded with the figures, since it changes.
ENGINE_FILES = (
    "workers/runtime/continuous.py",
    "workers/runtime/model_backend.py",
    "workers/caption/backend.py",
    "workers/caption/stage.py",
    "workers/runtime/loop.py",
)


@dataclass
class Row:
    measure: str
    config: str
    value: float
    unit: str
    goal: str = ""
    verdict: str = ""
    note: str = ""


def verdict(value: float, goal: float, higher_is_better: bool = True) -> str:
    if math.isnan(value):
        return "n/a"
    met = value >= goal if higher_is_better else value <= goal
    return "met" if met else "MISSED"


def format_table(rows: list[Row]) -> str:
    header = f"{'measure':<34} {'config':<28} {'value':>9} {'unit':<12} {'goal':<8} {'verdict':<7} note"
    lines = [header, "-" * len(header)]
    for r in rows:
        value = "n/a" if math.isnan(r.value) else f"{r.value:.3g}" if abs(r.value) < 1000 else f"{r.value:.0f}"
        lines.append(
            f"{r.measure:<34} {r.config:<28} {value:>9} {r.unit:<12} {r.goal:<8} {r.verdict:<7} {r.note}".rstrip()
        )
    return "\n".join(lines)


def caption_rows(
    engine_s: list[float],
    stage_s: list[float],
    segments: int,
    calls: list[int | None],
    engine_cpu_s: list[float],
    stage_cpu_s: list[float],
) -> list[Row]:
    ratios = paired_ratios(engine_s, stage_s)
    ratio = median_or_nan(ratios)
    cpu_ratios = paired_ratios(engine_cpu_s, stage_cpu_s)
    extra_ms = median_or_nan([(s - e) / segments * 1000 for e, s in zip(engine_s, stage_s, strict=True)])
    seen = [c for c in calls if c is not None]
    return [
        Row("bare engine (LLM.chat, one call)", f"{segments} segments", median_or_nan([segments / s for s in engine_s]), "segments/s"),  # noqa: E501
        Row("caption worker fed from Kafka", f"{segments} segments", median_or_nan([segments / s for s in stage_s]), "segments/s"),  # noqa: E501
        Row(
            "caption stage / bare engine",
            f"median of {len(ratios)} pairs",
            ratio,
            "x",
            f">={CAPTION_GOAL}",
            verdict(ratio, CAPTION_GOAL),
            "pairs " + " ".join(f"{r:.2f}" for r in ratios),
        ),
        Row(
            "caption stage / bare engine, CPU",
            "engine CPU s / worker CPU s",
            median_or_nan(cpu_ratios),
            "x",
            note="pairs " + " ".join(f"{r:.2f}" for r in cpu_ratios),
        ),
        Row("stage time beyond the engine", "(stage s - engine s)/segment", extra_ms, "ms/segment"),
        Row(
            "engine steps of the worker",
            f"per {segments} segments",
            median_or_nan([float(c) for c in seen]),
            "steps",
            note="runs " + " ".join(str(c) for c in calls),
        ),
    ]  # fmt: skip


def scaling_rows(
    single: list[float], double: list[float], pinned: bool, unit: str, cpu_single: list[float], cpu_double: list[float]
) -> list[Row]:
    """Rows of one decode configuration. ``cpu_*`` are CPU seconds per video second: what
    scaling would be if each worker had its core to itself (2 x the single worker's CPU cost
    over the pair's), the figure a shared machine cannot show in wall time."""
    ratios = [d / s for s, d in zip(single, double, strict=True)]
    ratio = median_or_nan(ratios)
    kind = "pinned, 1 core + 1 thread each" if pinned else "unpinned, default threads"
    goal = f">={PINNED_SCALING_GOAL}" if pinned else ""
    projected = median_or_nan([2 * c1 / c2 for c1, c2 in zip(cpu_single, cpu_double, strict=True)])
    return [
        Row("decode, 1 worker", kind, median_or_nan(single), unit),
        Row("decode, 2 workers", kind, median_or_nan(double), unit),
        Row(
            "decode scaling 2 vs 1",
            kind,
            ratio,
            "x",
            goal,
            verdict(ratio, PINNED_SCALING_GOAL) if pinned else "",
            "runs " + " ".join(f"{r:.2f}" for r in ratios),
        ),
        Row("decode CPU, 1 worker", kind, median_or_nan(cpu_single), "CPU s/video-s"),
        Row("decode CPU, 2 workers", kind, median_or_nan(cpu_double), "CPU s/video-s"),
        Row("decode scaling if cores were idle", kind, projected, "x", note="2 x CPU(1 worker) / CPU(2 workers)"),
    ]


def engine_code_state() -> dict[str, Any]:
    """The commit, and which engine files differ from it in the working tree."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=False).stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "dirty": git("status", "--porcelain", "--", *ENGINE_FILES).splitlines()}


def _worker_env(stack_env: dict[str, str]) -> dict[str, str]:
    from workers.offline_profile import offline_env

    env = {**os.environ, **stack_env, "CAPSTREAM_LOG_FORMAT": "json", "CAPSTREAM_LOG_LEVEL": "INFO"}
    for key, value in offline_env().items():
        env.setdefault(key, value)
    return env


async def bench_caption(args: argparse.Namespace, stack: Any, run_dir: Path, result: dict[str, Any]) -> list[Row]:
    from loadtest.caption_bench import BareEngine, WarmCaptionWorker, stage_run
    from loadtest.fresh_frames import fresh_segments
    from workers.settings import CaptionSettings

    settings = CaptionSettings()
    engine = BareEngine(settings)
    result["caption_engine_kwargs"] = engine.kwargs
    result["caption_mode"] = args.caption_mode
    warm = WarmCaptionWorker(stack, _worker_env(stack.env()), run_dir) if args.caption_mode == "warm" else None
    runs = []
    seed = args.seed
    try:
        if warm is not None:
            await warm.start()
        for pair in range(args.pairs):
            for side in ("engine", "stage"):
                seed += 1
                segments = fresh_segments(seed, args.segments, args.frames)
                if side == "engine":
                    run = engine.run(seed, segments)
                elif warm is not None:
                    run = await warm.run(seed, segments)
                else:
                    run = await stage_run(stack, _worker_env(stack.env()), seed, segments, run_dir)
                runs.append(run)
                _progress(
                    f"caption pair {pair + 1} {side}: {run.wall_s:.2f} s, cpu {run.cpu_s:.1f} s, "
                    f"steps={run.engine_calls} sizes={run.batch_sizes}"
                )
    finally:
        if warm is not None:
            warm.stop()
    result["caption_runs"] = [asdict(r) for r in runs]
    engine_s = [r.wall_s for r in runs if r.side == "engine"]
    stage = [r for r in runs if r.side == "stage"]
    return caption_rows(
        engine_s,
        [r.wall_s for r in stage],
        args.segments,
        [r.engine_calls for r in stage],
        [r.cpu_s for r in runs if r.side == "engine"],
        [r.cpu_s for r in stage],
    )


async def bench_overhead(args: argparse.Namespace, stack: Any, run_dir: Path, result: dict[str, Any]) -> list[Row]:
    from loadtest.caption_bench import overhead_run
    from loadtest.fresh_frames import fresh_segments
    from workers.runtime.logging import configure_logging
    from workers.settings import CaptionSettings

    # The stage's per-segment log lines are part of its cost: written, to a file.
    log_file = (run_dir / "overhead.log").open("a")
    configure_logging("INFO", "json", stream=log_file)
    segments = fresh_segments(args.seed + 1000, args.overhead_segments, args.frames)
    sequential = await overhead_run(stack, segments, 1)
    if args.profile:  # a run of its own: the profiler would inflate the measured one's CPU
        profiler = cProfile.Profile()
        profiler.enable()
        await overhead_run(stack, segments, 1)
        profiler.disable()
        out = run_dir / "overhead.pstats"
        profiler.dump_stats(out)
        with (run_dir / "overhead-profile.txt").open("w") as f:
            pstats.Stats(str(out), stream=f).sort_stats("cumulative").print_stats(40)
        result["overhead_profile"] = str(run_dir / "overhead-profile.txt")
    windowed = await overhead_run(stack, segments, CaptionSettings().caption_max_in_flight)
    log_file.close()
    result["overhead_runs"] = [
        {**asdict(r), "p50_ms": r.p50_ms, "p95_ms": r.p95_ms, "amortized_ms": r.amortized_ms, "cpu_ms": r.cpu_ms}
        for r in (sequential, windowed)
    ]
    frames = f"{len(segments)} segs x {args.frames} frames"
    return [
        Row(
            "overhead per segment, p50",
            f"1 in flight, {frames}",
            sequential.p50_ms,
            "ms",
            f"<={OVERHEAD_P50_GOAL_MS:g}",
            verdict(sequential.p50_ms, OVERHEAD_P50_GOAL_MS, higher_is_better=False),
            f"p95 {sequential.p95_ms:.1f} ms",
        ),
        Row("overhead per segment, CPU", f"1 in flight, {frames}", sequential.cpu_ms, "ms CPU"),
        Row("overhead per segment, wall/segment", f"{windowed.max_in_flight} in flight", windowed.amortized_ms, "ms"),
        Row("overhead per segment, CPU", f"{windowed.max_in_flight} in flight", windowed.cpu_ms, "ms CPU"),
    ]


async def bench_decode(args: argparse.Namespace, stack: Any, run_dir: Path, result: dict[str, Any]) -> list[Row]:
    from loadtest.decode_bench import make_video
    from loadtest.decode_scaling import decode_run, object_links

    video = make_video("720p", args.decode_seconds)
    objects = object_links(video, args.decode_objects, run_dir / "objects")
    env = _worker_env(stack.env())
    runs = []
    for rep in range(args.decode_repeat):
        for pinned in (True, False):
            for workers in (1, 2):
                run = await decode_run(stack, env, objects, workers, pinned, run_dir)
                runs.append(run)
                _progress(
                    f"decode rep {rep + 1} {run.config}: {run.wall_s:.2f} s, {run.video_s_per_s:.1f} video-s/s, "
                    f"cpu {[round(c, 1) for c in run.cpu_s]}, core share {[round(c, 2) for c in run.core_share]}"
                )
    result["decode_video"] = str(video)
    result["decode_runs"] = [
        {
            **asdict(r),
            "objects_per_s": r.objects_per_s,
            "video_s_per_s": r.video_s_per_s,
            "cpu_s_per_video_s": r.cpu_s_per_video_s,
            "core_share": r.core_share,
        }
        for r in runs
    ]
    rows = []
    for pinned in (True, False):
        one = [r for r in runs if r.pinned == pinned and r.workers == 1]
        two = [r for r in runs if r.pinned == pinned and r.workers == 2]
        rows += scaling_rows(
            [r.video_s_per_s for r in one],
            [r.video_s_per_s for r in two],
            pinned,
            "video-s/s",
            [r.cpu_s_per_video_s for r in one],
            [r.cpu_s_per_video_s for r in two],
        )
    return rows


def _progress(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


async def run_bench(args: argparse.Namespace) -> int:
    from workers.localstack import start_stack, stop_stack

    load = os.getloadavg()
    print(f"cores={os.cpu_count()} load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    result: dict[str, Any] = {"load_avg_start": load, "cores": os.cpu_count(), "args": vars(args) | {"json": None}}
    result["engine_code"] = engine_code_state()
    sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    benches = {"caption": bench_caption, "overhead": bench_overhead, "decode": bench_decode}
    with tempfile.TemporaryDirectory(prefix="stage-bench-") as tmp:
        data_dir = Path(tmp) / "stack"
        run_dir = args.keep or Path(tmp) / "runs"
        run_dir.mkdir(parents=True, exist_ok=True)
        stack = start_stack(data_dir, s3_events=False)
        rows: list[Row] = []
        try:
            for name, bench in benches.items():
                if name in sections:
                    rows += await bench(args, stack, run_dir, result)
                    result[f"load_avg_after_{name}"] = os.getloadavg()
        finally:
            stop_stack(data_dir)
    load = os.getloadavg()
    result["load_avg_end"] = load
    result["rows"] = [asdict(r) for r in rows]
    print(format_table(rows))
    print(f"load average at end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
        print(f"wrote {args.json}")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", default="caption,overhead,decode", help="comma list of caption,overhead,decode")
    parser.add_argument("--pairs", type=int, default=3, help="engine/stage run pairs, interleaved")
    parser.add_argument("--segments", type=int, default=24, help="segments per caption run")
    parser.add_argument("--frames", type=int, default=4, help="frames per segment")
    parser.add_argument(
        "--caption-mode",
        choices=["warm", "prefill"],
        default="warm",
        help="warm: one worker for all runs, segments produced as a burst; prefill: a fresh worker per run, "
        "started on a filled topic (its engine load puts minutes between the pair's runs)",
    )
    parser.add_argument("--seed", type=int, default=1, help="first seed of the fresh frames")
    parser.add_argument("--overhead-segments", type=int, default=200, help="segments per overhead run")
    parser.add_argument("--profile", action="store_true", help="cProfile a further one-in-flight overhead run")
    parser.add_argument("--decode-objects", type=int, default=8, help="objects per decode run")
    parser.add_argument("--decode-seconds", type=float, default=20.0, help="length of the generated 720p video")
    parser.add_argument("--decode-repeat", type=int, default=2, help="rounds of the four decode configurations")
    parser.add_argument("--keep", type=Path, default=None, help="keep worker logs and profiles in this directory")
    parser.add_argument("--json", type=Path, default=None, help="write every run and the summary here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    # Before vLLM is imported: its own log lines to stderr (stdout is the table), offline models.
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    from workers.offline_profile import offline_env
    from workers.runtime.logging import configure_logging

    for key, value in offline_env().items():
        os.environ.setdefault(key, value)
    configure_logging("WARNING", "console")
    # SIGTERM unwinds like Ctrl-C, so the workers and the stack are stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    return asyncio.run(run_bench(parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
