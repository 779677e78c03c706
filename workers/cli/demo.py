"""``capstream demo``: the whole pipeline on sample media, offline, on this machine.

Starts a private local stack on free ports, runs every stage (decode, caption, transcribe,
embed, index) in a child process with the offline CPU models, submits the media, waits, prints
the results, searches for a word said in the spoken sample (``capstream search WORD --modality
speech``, as a user would type it) and prints the hit with its time, and stops all of it.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import structlog
from redis.asyncio import Redis

from workers.cli.inspect import format_report
from workers.cli.submit import submit, wait_for
from workers.cli.worker_process import spawn_worker, stop_worker
from workers.localstack import start_stack, stop_stack
from workers.offline_profile import offline_env
from workers.samples import SPOKEN_SAMPLE, SPOKEN_WORD, sample_paths
from workers.settings import S3Settings
from workers.state.object_report import object_report

log = structlog.get_logger("capstream.demo")


def cmd_demo(paths: list[Path], as_json: bool, timeout_s: float, keep: bool) -> int:
    media = paths or sample_paths()
    data_dir = Path(tempfile.mkdtemp(prefix="capstream-demo-"))
    started = time.monotonic()
    endpoints = start_stack(data_dir)
    log.info(
        "stack_started",
        data_dir=str(data_dir),
        kafka=endpoints.kafka_bootstrap,
        redis=endpoints.redis_url,
        s3=endpoints.s3_endpoint_url,
    )
    os.environ.update(endpoints.env())
    worker_log = data_dir / "logs" / "workers.log"
    workers = spawn_worker(["run"], {**os.environ, **offline_env()}, worker_log)
    ok = False
    try:
        reports = asyncio.run(_run(media, workers, timeout_s, show=not as_json))
        ok = bool(reports) and all(r["state"] == "done" for r in reports)
        if as_json:
            print(json.dumps(reports, indent=2))
        else:
            for report in reports:
                print(format_report(report, title=report["source"]))
            print(
                f"demo: {sum(r['state'] == 'done' for r in reports)}/{len(reports)} objects done "
                f"in {time.monotonic() - started:.1f}s"
            )
        if ok and any(p.name == SPOKEN_SAMPLE for p in media):
            ok = _search_spoken_word(show=not as_json)
    finally:
        stop_worker(workers)
        stop_stack(data_dir)
        if ok and not keep:
            shutil.rmtree(data_dir, ignore_errors=True)
        else:
            sys.stderr.write(f"demo: logs kept in {data_dir / 'logs'}\n")
    return 0 if ok else 1


def _search_spoken_word(show: bool, timeout_s: float = 30.0) -> bool:
    """``capstream search WORD --modality speech``: True once the spoken sample is a hit (the
    index commits a second or so after an object is done)."""
    command = ["search", SPOKEN_WORD, "--modality", "speech", "--offline", "--json"]
    deadline = time.monotonic() + timeout_s
    while True:
        out = subprocess.run(
            [sys.executable, "-m", "workers.cli.main", *command],
            env={**os.environ, **offline_env()},
            capture_output=True,
            text=True,
            timeout=300,
        )
        hits = json.loads(out.stdout) if out.returncode == 0 and out.stdout.strip() else []
        found = [h for h in hits if str(h.get("key", "")).endswith(SPOKEN_SAMPLE)]
        if found or time.monotonic() >= deadline:
            break
        time.sleep(1.0)
    if show:
        from workers.cli.search import format_hits
        from workers.search.query import SearchHit

        print(f"\n$ capstream {' '.join(command[:4])}")
        print(format_hits([SearchHit.model_validate(h) for h in hits]))
    if not found:
        sys.stderr.write(f"demo: the spoken word {SPOKEN_WORD!r} was not found ({out.stderr[-1000:]})\n")
    return bool(found)


async def _run(
    media: list[Path], workers: subprocess.Popen[bytes], timeout_s: float, show: bool
) -> list[dict[str, Any]]:
    settings = S3Settings()
    submitted = await submit(media, settings)
    names = {s.object_id: Path(s.name).name for s in submitted}
    waiter = asyncio.create_task(wait_for(list(names), names, settings, timeout_s, show=show))
    while not waiter.done():
        if workers.poll() is not None:
            waiter.cancel()
            raise RuntimeError(f"workers exited with code {workers.returncode}; see their log")
        await asyncio.sleep(0.5)
    await waiter
    redis = Redis.from_url(settings.redis_url)
    try:
        reports = []
        for s in submitted:
            report = await object_report(redis, settings, s.object_id) or {
                "object_id": s.object_id,
                "state": "timeout",
                "error": "no progress recorded",
                "segments": [],
            }
            reports.append({"source": Path(s.name).name, **report})
        return reports
    finally:
        await redis.aclose()
