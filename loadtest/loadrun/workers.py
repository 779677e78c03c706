"""The load run's workers: how many processes of each stage (``capstream worker <stage>``, one OS
process each as in production, see ``loadtest.worker_process``), and when they are ready."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from loadtest.worker_process import WorkerError, WorkerProcess
from workers.stages import REGISTRY

# Pipeline order; the bridge turns the store's filer events into S3 notifications.
STAGE_ORDER = tuple(REGISTRY.names())


def parse_plan(text: str) -> dict[str, int]:
    """``decode=2,caption=1`` -> processes per stage; stages left out get one, ``x=0`` none."""
    plan = dict.fromkeys(STAGE_ORDER, 1)
    for part in filter(None, (p.strip() for p in text.split(","))):
        stage, sep, count = part.partition("=")
        if not sep or stage not in plan or not count.isdigit():
            raise ValueError(f"--workers wants stage=count with stage in {', '.join(STAGE_ORDER)}: {part!r}")
        plan[stage] = int(count)
    return plan


def is_ready(worker: WorkerProcess) -> bool:
    """Serving metrics, every consumer loop started, and a share of partitions assigned."""
    worker.read_log()
    return (
        worker.metrics_url is not None
        and worker.counts["stage_started"] >= len(REGISTRY[worker.stage].consumers)
        and worker.counts["partitions_assigned"] >= 1
    )


def check_serving(worker: WorkerProcess) -> None:
    """A worker states its metrics port before it builds its stages: a started stage without
    that line means it will never be scraped."""
    if worker.metrics_url is None and worker.counts["stage_started"]:
        raise WorkerError(f"worker {worker.name} started without serving /metrics; see {worker.log_path}")


def plan_workers(plan: dict[str, int], log_dir: Path) -> list[WorkerProcess]:
    return [
        WorkerProcess(stage, i, log_dir / f"{stage}-{i}.log")
        for stage in STAGE_ORDER
        for i in range(plan.get(stage, 0))
    ]


def wait_ready(workers: list[WorkerProcess], timeout_s: float, partitions: int) -> None:
    """Until every worker is ready (models loaded, group joined) or ``timeout_s`` passes.

    A group with more members than partitions leaves some idle: those need not be assigned any.
    """
    per_stage = Counter(w.stage for w in workers)
    deadline = time.monotonic() + timeout_s
    while True:
        for w in workers:
            w.read_log()
            w.check_alive()
            check_serving(w)
        waiting = [
            w.name
            for w in workers
            if not (is_ready(w) or (per_stage[w.stage] > partitions and w.metrics_url and w.counts["stage_started"]))
        ]
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise WorkerError(f"workers not ready after {timeout_s:.0f}s: {', '.join(waiting)}")
        time.sleep(0.5)
