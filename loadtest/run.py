"""Load test: the pipeline under a stream of fresh media, one process per worker, with a report.

    python -m loadtest.run --objects N [--rate R] [--workers decode=2,caption=1,transcribe=1,embed=1,index=1]
                           [--report DIR] [--seed S] [--timeout S] [--keep]

Starts a private local stack, one ``capstream worker <stage> --offline`` process per worker
(the ``s3-events`` bridge included: uploads reach the pipeline as filer events, as any S3
client's would), waits until every worker has its model loaded and its partitions, then
uploads N objects (videos, some spoken, and stills, each with fresh pixels and fresh speech)
at R objects/s and waits until every segment and speech chunk is a row of the search index.
Meanwhile it scrapes every worker's ``/metrics`` and samples every process's CPU and RSS each
second. Then it stops the workers with SIGTERM and writes ``report.md``, ``report.json`` and
PNG plots into DIR (see ``loadrun.report``).

The exit status is 0 when every object became searchable in time and every worker exited
cleanly; the last line of stdout is ``loadtest: objects=N searchable=N segments=N
speech_chunks=N ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import structlog

from loadtest.loadrun.feed import ObjectRecord, upload_at_rate, wait_searchable
from loadtest.loadrun.figures import LAG, compute
from loadtest.loadrun.report import write_report
from loadtest.loadrun.sampler import Sampler
from loadtest.loadrun.workers import parse_plan, plan_workers, wait_ready
from loadtest.loadrun.workload import make_workload
from loadtest.worker_process import WorkerProcess
from workers.localstack import StackEndpoints, start_stack, stop_stack
from workers.offline_profile import offline_env
from workers.runtime.logging import configure_logging
from workers.runtime.metrics import total
from workers.settings import IndexSettings

log = structlog.get_logger("capstream.loadtest")

DEFAULT_WORKERS = "decode=2,caption=1,transcribe=1,embed=1,index=1"
SETTLE_S = 30.0  # after the last row: time for the loops to commit and report lag 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, required=True, help="objects to upload")
    parser.add_argument("--rate", type=float, default=1.0, help="objects per second (0: back to back)")
    parser.add_argument(
        "--workers", default=DEFAULT_WORKERS, help="processes per stage; stages left out (s3-events too) get one"
    )
    parser.add_argument("--report", type=Path, default=None, help="report directory (default: a new temp dir)")
    parser.add_argument("--seed", type=int, default=11, help="seed of the media mix and the pixels")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds to wait for every object")
    parser.add_argument("--ready-timeout", type=float, default=300.0, help="seconds for the workers to start")
    parser.add_argument("--keep", action="store_true", help="keep the stack's data, media and logs")
    parser.add_argument(
        "--sample-interval",
        type=float,
        default=1.0,
        help="seconds between metric/CPU sweeps; the workers refresh their lag gauge as often",
    )
    args = parser.parse_args(argv)
    if args.objects < 1:
        parser.error("--objects must be at least 1")
    if args.sample_interval <= 0:
        parser.error("--sample-interval must be positive")
    try:
        args.plan = parse_plan(args.workers)
    except ValueError as exc:
        parser.error(str(exc))
    return args


async def settle(sampler: Sampler, workers: list[WorkerProcess]) -> None:
    """Until every worker reported lag 0 and nothing in flight (at most ``SETTLE_S``): the
    figures are read after the last commits, not in the middle of them."""
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline:
        sweep = sampler.latest()
        if sweep is not None and len(sweep.metrics) == len(workers):
            lag = sum(total(s, LAG) for s in sweep.metrics.values())
            in_flight = sum(total(s, "capstream_records_in_flight") for s in sweep.metrics.values())
            if lag == 0 and in_flight == 0:
                return
        await asyncio.sleep(0.5)
    log.warning("loadtest_not_settled", seconds=SETTLE_S)


async def drive(
    args: argparse.Namespace, workers: list[WorkerProcess], sampler: Sampler, records: list[ObjectRecord]
) -> bool:
    items = args.items
    settings = IndexSettings()
    uploads = asyncio.create_task(upload_at_rate(items, args.rate, settings, records))

    def tick() -> None:
        for w in workers:
            w.check_alive()
        if uploads.done() and uploads.exception() is not None:
            raise uploads.exception()  # type: ignore[misc]

    try:
        ok = await wait_searchable(len(items), records, settings, args.timeout, tick)
    finally:
        uploads.cancel()
    await settle(sampler, workers)
    return ok


def stop_all(workers: list[WorkerProcess]) -> dict[str, int | None]:
    """SIGTERM to every worker at once (each drains and commits), each once: a second SIGTERM
    that lands after the worker's handler is gone would kill it mid-shutdown."""
    with ThreadPoolExecutor(max_workers=max(len(workers), 1)) as pool:
        codes = list(pool.map(WorkerProcess.stop, workers))
    return {w.name: code for w, code in zip(workers, codes, strict=True)}


async def run(args: argparse.Namespace) -> int:
    data_dir = Path(tempfile.mkdtemp(prefix="capstream-loadtest-"))
    report_dir: Path = args.report or Path(tempfile.mkdtemp(prefix="capstream-loadtest-report-"))
    args.items = make_workload(data_dir / "media", args.objects, args.seed)
    endpoints: StackEndpoints = start_stack(data_dir / "stack")
    os.environ.update(endpoints.env())
    env = {**os.environ, **offline_env(), "CAPSTREAM_LAG_INTERVAL_S": str(args.sample_interval)}
    workers = plan_workers(args.plan, data_dir / "logs")
    records: list[ObjectRecord] = []
    sampler: Sampler | None = None
    ok = False
    exit_codes: dict[str, int | None] = {}
    try:
        for w in workers:
            w.start(env)
        started = time.monotonic()
        await asyncio.to_thread(wait_ready, workers, args.ready_timeout, IndexSettings().topic_partitions)
        args.ready_s = time.monotonic() - started
        log.info("workers_ready", workers=len(workers), seconds=round(args.ready_s, 1))
        pids = {w.name: w.pid for w in workers} | {f"stack:{s}": p for s, p in endpoints.pids.items()}
        pids["loadgen"] = os.getpid()
        sampler = Sampler(
            {w.name: w.metrics_url or "" for w in workers},
            pids,
            alone=frozenset({"loadgen"}),
            interval_s=args.sample_interval,
        )
        sampler.start()
        ok = await drive(args, workers, sampler, records)
        sampler.stop()
        sampler.sweep_now()  # the last figures, with every commit done
    finally:
        if sampler is not None:
            sampler.stop()
        exit_codes = stop_all(workers)
        stop_stack(data_dir / "stack")
    clean_exit = all(code == 0 for code in exit_codes.values())
    kinds = {w.name: w.stage for w in workers} | {f"stack:{s}": "stack" for s in endpoints.pids}
    kinds["loadgen"] = "loadgen"
    fig = compute(sampler.sweeps, records, sampler.started_wall, kinds)
    fig["config"] = _config(args, workers, exit_codes, timed_out=not ok)
    fig["scrape_errors"] = sampler.scrape_errors
    write_report(fig, report_dir)
    print(f"loadtest: report in {report_dir}")
    run_fig = fig["run"]
    e2e = fig["end_to_end"]["segments_from_rows"]
    passed = ok and clean_exit and run_fig["searchable"] == args.objects
    if passed and not args.keep:
        shutil.rmtree(data_dir, ignore_errors=True)
    else:
        print(f"loadtest: stack data, media and worker logs kept in {data_dir}", file=sys.stderr)
    print(
        f"loadtest: objects={run_fig['objects']} searchable={run_fig['searchable']} segments={run_fig['segments']} "
        f"speech_chunks={run_fig['speech_chunks']} "
        f"seconds={run_fig['duration_s']:.1f} segments_per_s={run_fig['segments_per_s']:.3f} "
        f"e2e_p50={e2e.get('p50', float('nan')):.2f} e2e_p95={e2e.get('p95', float('nan')):.2f} "
        f"e2e_p99={e2e.get('p99', float('nan')):.2f} clean_exit={clean_exit} ok={passed}"
    )
    return 0 if passed else 1


def _config(
    args: argparse.Namespace, workers: list[WorkerProcess], exit_codes: dict[str, int | None], timed_out: bool
) -> dict[str, Any]:
    return {
        "objects": args.objects,
        "rate": args.rate,
        "seed": args.seed,
        "workers": ", ".join(f"{stage}={n}" for stage, n in args.plan.items() if n),
        "plan": args.plan,
        "processes": {w.name: {"stage": w.stage, "pid": w.pid, "metrics_url": w.metrics_url} for w in workers},
        "exit_codes": exit_codes,
        "timed_out": timed_out,
        "workers_ready_s": getattr(args, "ready_s", None),
        "cores": os.cpu_count(),
    }


def main(argv: list[str] | None = None) -> int:
    configure_logging("INFO", "console")  # logs on stderr; stdout ends with the figures line
    return asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
