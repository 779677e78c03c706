"""One ``capstream worker STAGE`` process under a bench, the load run or the chaos run.

Each is spawned as production runs it (its own process, optionally pinned to a core), serves
``/metrics`` on a port it picks itself, and is read back through what it states: its JSON log
lines (the metrics URL, its stages starting, its partition assignments) and its ``/metrics``.
It stops as a supervisor stops it: SIGTERM (drain and commit), SIGKILL if it hangs.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

from workers.cli.worker_process import spawn_worker, stop_worker
from workers.runtime.metrics import scrape

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
# The log lines a run reads back in full; every other event is only counted.
KEPT_EVENTS = ("metrics_serving", "partitions_assigned")


class WorkerError(RuntimeError):
    """A worker exited, or never became ready."""


def log_entry(line: str) -> dict[str, Any] | None:
    """A JSON log line as a dict; None for anything else (vLLM and C libraries write plain text)."""
    start = line.find("{")
    if start < 0:
        return None
    try:
        entry = json.loads(line[start:])
    except ValueError:
        return None
    return entry if isinstance(entry, dict) else None


def event_time(entry: Mapping[str, Any]) -> float:
    """A log line's ISO timestamp as epoch seconds."""
    return datetime.fromisoformat(str(entry["timestamp"]).replace("Z", "+00:00")).timestamp()


@dataclass
class WorkerProcess:
    stage: str
    number: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    counts: Counter[str] = field(default_factory=Counter)
    kept: defaultdict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    _read: int = 0

    @property
    def name(self) -> str:
        return f"{self.stage}-{self.number}"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "start() first"
        return self.proc.pid

    def start(self, env: Mapping[str, str], core: int | None = None) -> WorkerProcess:
        """Spawn it with ``env``; metrics on port 0: it binds a free port and logs which."""
        self.proc = spawn_worker(["worker", self.stage], {**env, "CAPSTREAM_METRICS_PORT": "0"}, self.log_path, core)
        return self

    def read_log(self) -> None:
        """Take in the JSON lines written since the last call."""
        if not self.log_path.exists():
            return
        with self.log_path.open("rb") as fh:
            fh.seek(self._read)
            chunk = fh.read()
        end = chunk.rfind(b"\n") + 1  # a half-written last line waits for the next call
        self._read += end
        for line in chunk[:end].decode(errors="replace").splitlines():
            if (entry := log_entry(line)) is None:
                continue
            event = str(entry.get("event", ""))
            self.counts[event] += 1
            if event in KEPT_EVENTS:
                self.kept[event].append(entry)

    def events(self, event: str) -> list[dict[str, Any]]:
        """Every line of ``event`` (one of KEPT_EVENTS) logged so far."""
        assert event in KEPT_EVENTS, event
        self.read_log()
        return self.kept[event]

    @property
    def metrics_url(self) -> str | None:
        """Where it serves ``/metrics``, once it has said (before it builds its stages)."""
        serving = self.events("metrics_serving")
        return str(serving[-1]["url"]) if serving else None

    def assignment(self) -> list[str] | None:
        """Partitions of the last assignment it logged (None before the first)."""
        assigned = self.events("partitions_assigned")
        return list(assigned[-1]["partitions"]) if assigned else None

    def scrape(self, timeout_s: float = 10.0) -> Samples:
        """Its ``/metrics`` now; OSError if it does not answer or has not said where yet."""
        url = self.metrics_url
        if url is None:
            raise ConnectionError(f"worker {self.name} has not stated its metrics port; log {self.log_path}")
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return scrape(resp.read().decode())

    def cpu_seconds(self) -> float:
        """User + system CPU of the worker and its children so far (0 once it exited)."""
        try:
            p = psutil.Process(self.pid)
            total = sum(p.cpu_times()[:2])
            return total + sum(sum(c.cpu_times()[:2]) for c in p.children(recursive=True))
        except psutil.NoSuchProcess:
            return 0.0

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""
            raise WorkerError(f"worker {self.name} exited with {self.proc.returncode}; log {self.log_path}:\n{tail}")

    def stop(self, timeout_s: float = 60.0) -> int | None:
        """SIGTERM, SIGKILL after ``timeout_s``; its exit code (None if it never started)."""
        if self.proc is None:
            return None
        stop_worker(self.proc, timeout_s)
        return self.proc.returncode
