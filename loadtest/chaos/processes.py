"""Worker processes that get killed and restarted, and what each incarnation's metrics said.

A process killed with -9 takes its counters with it, so the chaos run keeps, per incarnation,
the last ``/metrics`` scrape it got: a background thread scrapes every live worker every
``SCRAPE_S`` and ``kill9`` scrapes once more immediately before the signal (the gap between
that scrape and the kill, a few milliseconds, is recorded: model calls started inside it are
the only ones the metrics miss, and the verifier also counts calls from the output records).
Totals are the sum over incarnations of their last scrape. When the scrape right before a
kill fails, the kill's in-flight count is unknown: ``kill9`` says so (``PreKill.error``)
instead of passing off the previous scrape as the count at the kill.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.client import HTTPException
from pathlib import Path

from loadtest.loadrun.workers import is_ready
from loadtest.worker_process import Samples, WorkerProcess
from workers.runtime.metrics import total
from workers.stages import REGISTRY

SCRAPE_S = 0.3


def stage_in_flight(samples: Samples, stage: str) -> int:
    """Records in flight in every consumer loop of ``stage`` (embed has two: captions, transcripts)."""
    return int(sum(total(samples, "capstream_records_in_flight", stage=c.name) for c in REGISTRY[stage].consumers))


@dataclass
class Incarnation:
    """One process of a worker slot (its log states the metrics URL and the stage starts) plus
    the last scrape of its ``/metrics``."""

    process: WorkerProcess
    last: Samples = field(default_factory=dict)  # the last successful scrape
    killed: bool = False

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        assert self.process.proc is not None
        return self.process.proc

    @property
    def log_path(self) -> Path:
        return self.process.log_path

    def scrape(self) -> str | None:
        """Scrape now; why it failed, or None. A process that has not yet stated its metrics
        port has taken no record (it serves metrics before it builds its stages): that is an
        empty scrape, not a failure."""
        if self.proc.poll() is not None:
            return f"exited with {self.proc.returncode}"
        if self.process.metrics_url is None:
            self.last = {}
            return None
        try:
            self.last = self.process.scrape(timeout_s=2.0)
        except (OSError, HTTPException) as exc:  # refused, timed out, cut short mid-answer
            return f"scrape failed: {exc!r}"
        return None


@dataclass(frozen=True)
class PreKill:
    """What ``kill9`` saw and did: the in-flight count from the scrape right before the signal
    (None when that scrape failed, and ``error`` says why) and ms from its answer to the signal."""

    in_flight: int | None
    gap_ms: float
    killed: bool
    error: str | None = None


@dataclass
class WorkerProc:
    """One worker slot (``decode-1``); every restart is a new incarnation with its own log."""

    stage: str
    number: int
    log_dir: Path
    env: dict[str, str]
    incarnations: list[Incarnation] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def name(self) -> str:
        return f"{self.stage}-{self.number}"

    @property
    def current(self) -> Incarnation:
        return self.incarnations[-1]

    def start(self) -> None:
        process = WorkerProcess(self.stage, self.number, self.log_dir / f"{self.name}.{len(self.incarnations)}.log")
        process.start(self.env)  # metrics on a free port, stated in its log
        with self.lock:
            self.incarnations.append(Incarnation(process))

    @property
    def ready(self) -> bool:
        """Serving metrics, every consumer loop started (the engine is loaded by then), partitions."""
        return is_ready(self.current.process)

    def in_flight(self) -> int:
        return stage_in_flight(self.current.last, self.stage)

    def kill9(self, only_in_flight: bool = False) -> PreKill:
        """Scrape, then ``kill -9`` the process group at once. ``only_in_flight``: no kill when
        that scrape shows nothing in flight, or failed: on an idle machine a worker's records
        often finish between the periodic scrape and this one, and the run wants kills that
        cost work, with the cost known."""
        with self.lock:
            inc = self.current
            error = inc.scrape()
            scraped = time.monotonic()
            in_flight = None if error else stage_in_flight(inc.last, self.stage)
            if only_in_flight and not in_flight:
                return PreKill(in_flight, 0.0, killed=False, error=error)
            if inc.proc.poll() is None:
                os.killpg(inc.proc.pid, signal.SIGKILL)
            gap_ms = (time.monotonic() - scraped) * 1000
            inc.killed = True
        inc.proc.wait()
        return PreKill(in_flight, gap_ms, killed=True, error=error)

    def scrape_now(self, tries: int = 3) -> str | None:
        """A fresh scrape of the running incarnation (up to ``tries``); why the last try
        failed, or None."""
        error: str | None = None
        for _ in range(tries):
            with self.lock:
                error = self.current.scrape()
            if error is None:
                return None
        return error

    def alive(self) -> bool:
        return self.current.proc.poll() is None

    def stop(self) -> int | None:
        """A last scrape, then SIGTERM (drain and commit)."""
        with self.lock:
            self.current.scrape()
        return self.current.process.stop(60.0)

    def current_total(self, name: str, **labels: str) -> float:
        """From the running incarnation's last scrape (gauges: lag, in flight)."""
        return total(self.current.last, name, **labels)

    def total(self, name: str, **labels: str) -> float:
        """Sum over incarnations of each one's last scrape."""
        return sum(total(inc.last, name, **labels) for inc in self.incarnations)


class Scraper:
    """Scrapes every live worker every ``SCRAPE_S`` on its own thread."""

    def __init__(self, workers: list[WorkerProc]) -> None:
        self.workers = workers
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-scraper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            for w in self.workers:
                with w.lock:
                    w.current.process.read_log()
                    w.current.scrape()
            self._stop.wait(SCRAPE_S)
