"""One OS process per worker, as in production: ``capstream worker <stage> --offline`` with its
own log, serving ``/metrics`` on a port it picks itself and states in its log."""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from workers.cli.worker_process import spawn_worker, stop_worker

# Pipeline order; the bridge turns the store's filer events into S3 notifications.
STAGE_ORDER = ("s3-events", "decode", "caption", "embed", "index")
# Consumer loops per process: the index worker also consumes the removals topic.
_LOOPS = {"index": 2}


class WorkerError(RuntimeError):
    """A worker exited, or never became ready."""


def parse_plan(text: str) -> dict[str, int]:
    """``decode=2,caption=1`` -> processes per stage; stages left out get one, ``x=0`` none."""
    plan = dict.fromkeys(STAGE_ORDER, 1)
    for part in filter(None, (p.strip() for p in text.split(","))):
        stage, sep, count = part.partition("=")
        if not sep or stage not in plan or not count.isdigit():
            raise ValueError(f"--workers wants stage=count with stage in {', '.join(STAGE_ORDER)}: {part!r}")
        plan[stage] = int(count)
    return plan


@dataclass
class WorkerProc:
    stage: str
    number: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    metrics_url: str | None = None
    events: Counter[str] = field(default_factory=Counter)
    _read: int = 0

    @property
    def name(self) -> str:
        return f"{self.stage}-{self.number}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, env: dict[str, str]) -> None:
        # Port 0: each process binds a free port and says which in its `metrics_serving` line.
        self.proc = spawn_worker(
            ["worker", self.stage, "--offline"], {**env, "CAPSTREAM_METRICS_PORT": "0"}, self.log_path
        )

    def read_log(self) -> None:
        """Take in the JSON lines written since the last call (the metrics URL, stage starts)."""
        if not self.log_path.exists():
            return
        with self.log_path.open("rb") as fh:
            fh.seek(self._read)
            chunk = fh.read()
        end = chunk.rfind(b"\n") + 1  # a half-written last line waits for the next call
        self._read += end
        for line in chunk[:end].splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # vLLM and C libraries write plain text
            if not isinstance(entry, dict):
                continue
            event = str(entry.get("event", ""))
            self.events[event] += 1
            if event == "metrics_serving":
                self.metrics_url = str(entry["url"])

    @property
    def ready(self) -> bool:
        """Serving metrics, every consumer loop started, and a share of partitions assigned."""
        return (
            self.metrics_url is not None
            and self.events["stage_started"] >= _LOOPS.get(self.stage, 1)
            and self.events["partitions_assigned"] >= 1
        )

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise WorkerError(f"worker {self.name} exited with {self.proc.returncode}; see {self.log_path}")

    def check_serving(self) -> None:
        """A worker states its metrics port before it builds its stages: a started stage
        without that line means it will never be scraped."""
        if self.metrics_url is None and self.events["stage_started"]:
            raise WorkerError(f"worker {self.name} started without serving /metrics; see {self.log_path}")

    def stop(self, timeout_s: float = 60.0) -> None:
        if self.proc is not None:
            stop_worker(self.proc, timeout_s)


def plan_workers(plan: dict[str, int], log_dir: Path) -> list[WorkerProc]:
    return [
        WorkerProc(stage, i, log_dir / f"{stage}-{i}.log") for stage in STAGE_ORDER for i in range(plan.get(stage, 0))
    ]


def wait_ready(workers: list[WorkerProc], timeout_s: float, partitions: int) -> None:
    """Until every worker is ready (models loaded, group joined) or ``timeout_s`` passes.

    A group with more members than partitions leaves some idle: those need not be assigned any.
    """
    per_stage = Counter(w.stage for w in workers)
    deadline = time.monotonic() + timeout_s
    while True:
        for w in workers:
            w.read_log()
            w.check_alive()
            w.check_serving()
        waiting = [
            w.name
            for w in workers
            if not (w.ready or (per_stage[w.stage] > partitions and w.metrics_url and w.events["stage_started"]))
        ]
        if not waiting:
            return
        if time.monotonic() > deadline:
            raise WorkerError(f"workers not ready after {timeout_s:.0f}s: {', '.join(waiting)}")
        time.sleep(0.5)
