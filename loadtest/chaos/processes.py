"""Worker processes that get killed and restarted, and what each incarnation's metrics said.

A process killed with -9 takes its counters with it, so the chaos run keeps, per incarnation,
the last ``/metrics`` scrape it got: a background thread scrapes every live worker every
``SCRAPE_S`` and ``kill9`` scrapes once more immediately before the signal (the gap between
that scrape and the kill, a few milliseconds, is recorded: model calls started inside it are
the only ones the metrics miss, and the verifier also counts calls from the output records).
Totals are the sum over incarnations of their last scrape.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from loadtest.loadrun.workers import WorkerProc as LoggedWorker
from workers.cli.worker_process import stop_worker
from workers.runtime.metrics import scrape, total

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

SCRAPE_S = 0.3


@dataclass
class Incarnation:
    """One process of a worker slot: the load test's process wrapper (its log states the
    metrics URL and the stage starts) plus the last scrape of its ``/metrics``."""

    process: LoggedWorker
    last: Samples = field(default_factory=dict)  # the last successful scrape
    killed: bool = False

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        assert self.process.proc is not None
        return self.process.proc

    @property
    def log_path(self) -> Path:
        return self.process.log_path

    def scrape(self) -> bool:
        url = self.process.metrics_url
        if url is None or self.proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=2.0) as resp:
                self.last = scrape(resp.read().decode())
        except OSError:
            return False
        return True


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
        process = LoggedWorker(self.stage, self.number, self.log_dir / f"{self.name}.{len(self.incarnations)}.log")
        process.start(self.env)  # metrics on a free port, stated in its log
        with self.lock:
            self.incarnations.append(Incarnation(process))

    @property
    def ready(self) -> bool:
        """Serving metrics, every consumer loop started (the engine is loaded by then), partitions."""
        self.current.process.read_log()
        return self.current.process.ready

    def in_flight(self) -> int:
        return int(total(self.current.last, "capstream_records_in_flight", stage=self.stage))

    def kill9(self) -> tuple[int, float]:
        """Scrape, then ``kill -9`` the process group at once; (records in flight at that
        scrape, ms from the scrape's answer to the signal)."""
        with self.lock:
            inc = self.current
            inc.scrape()
            scraped = time.monotonic()
            in_flight = int(total(inc.last, "capstream_records_in_flight", stage=self.stage))
            if inc.proc.poll() is None:
                os.killpg(inc.proc.pid, signal.SIGKILL)
            gap_ms = (time.monotonic() - scraped) * 1000
            inc.killed = True
        inc.proc.wait()
        return in_flight, gap_ms

    def alive(self) -> bool:
        return self.current.proc.poll() is None

    def stop(self) -> int | None:
        """A last scrape, then SIGTERM (drain and commit)."""
        with self.lock:
            self.current.scrape()
        stop_worker(self.current.proc, 60.0)
        return self.current.proc.returncode

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


def wait_ready(workers: list[WorkerProc], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not all(w.ready for w in workers):
        for w in workers:
            if not w.alive():
                raise RuntimeError(f"worker {w.name} exited; see {w.current.log_path}")
        if time.monotonic() > deadline:
            waiting = [w.name for w in workers if not w.ready]
            raise RuntimeError(f"workers not ready after {timeout_s:.0f}s: {waiting}")
        time.sleep(0.5)
