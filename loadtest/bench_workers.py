"""Worker processes under a benchmark: spawned as production runs them (``capstream worker
STAGE``, one process each, optionally pinned to a core), read back through what they state:
their JSON log lines (when partitions were assigned) and their ``/metrics`` page."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

from workers.cli.worker_process import stop_worker
from workers.runtime.metrics import scrape

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def log_events(text: str, event: str) -> list[dict[str, Any]]:
    """The JSON log lines of ``event`` in a worker's log (other lines, e.g. vLLM's, skipped)."""
    found = []
    for line in text.splitlines():
        if f'"{event}"' not in line:
            continue
        try:
            entry = json.loads(line[line.index("{") :])
        except (ValueError, json.JSONDecodeError):
            continue
        if isinstance(entry, dict) and entry.get("event") == event:
            found.append(entry)
    return found


def event_time(entry: Mapping[str, Any]) -> float:
    """A log line's ISO timestamp as epoch seconds."""
    return datetime.fromisoformat(str(entry["timestamp"]).replace("Z", "+00:00")).timestamp()


@dataclass
class BenchWorker:
    proc: subprocess.Popen[bytes]
    log_path: Path
    core: int | None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def events(self, event: str) -> list[dict[str, Any]]:
        return log_events(self.log_text(), event)

    def assignment(self) -> list[str] | None:
        """Partitions of the last assignment it logged (None before the first)."""
        assigned = self.events("partitions_assigned")
        return list(assigned[-1]["partitions"]) if assigned else None

    def metrics_url(self, timeout_s: float = 180.0) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            if serving := self.events("metrics_serving"):
                return str(serving[-1]["url"])
            time.sleep(0.2)
        raise TimeoutError(f"worker never stated its metrics port; log {self.log_path}")

    def scrape(self) -> Samples:
        return scrape(urllib.request.urlopen(self.metrics_url(), timeout=10).read().decode())

    def cpu_seconds(self) -> float:
        """User + system CPU of the worker and its children so far (0 once it exited)."""
        try:
            p = psutil.Process(self.proc.pid)
            total = sum(p.cpu_times()[:2])
            return total + sum(sum(c.cpu_times()[:2]) for c in p.children(recursive=True))
        except psutil.NoSuchProcess:
            return 0.0

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            tail = self.log_text()[-3000:]
            raise RuntimeError(f"worker exited with {self.proc.returncode}; log {self.log_path}:\n{tail}")

    def stop(self) -> None:
        stop_worker(self.proc)


def spawn_bench_worker(stage: str, env: Mapping[str, str], log_path: Path, core: int | None = None) -> BenchWorker:
    """``capstream worker STAGE`` in its own process group; under ``taskset -c CORE`` when
    pinned, so every thread it ever starts (decode pool, FFmpeg's, torch's) stays on that core."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    pin = ["taskset", "-c", str(core)] if core is not None else []
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [*pin, sys.executable, "-m", "workers.cli.main", "worker", stage],
            env=dict(env), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    return BenchWorker(proc, log_path, core)
