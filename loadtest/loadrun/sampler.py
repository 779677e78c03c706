"""Every second, each worker's ``/metrics`` and each process's CPU and RSS.

The load test reads throughput, lag and latency from the same endpoint an autoscaler and
Prometheus would, so the metrics are tested by use. Sampling runs on its own thread: the
asyncio loop that uploads and waits never stalls the clock of the samples.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from dataclasses import dataclass, field

import psutil
import structlog

from workers.runtime.metrics import scrape

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

log = structlog.get_logger("capstream.loadtest.sampler")


@dataclass(frozen=True)
class Usage:
    cpu_percent: float  # of one core; a process tree busy on two cores reads 200
    rss_bytes: int


@dataclass
class Sweep:
    """One round over every process, at ``t`` seconds since the sampler started."""

    t: float
    metrics: dict[str, Samples] = field(default_factory=dict)  # worker name -> its /metrics
    usage: dict[str, Usage] = field(default_factory=dict)  # process name -> CPU and RSS
    machine_cpu_percent: float = 0.0  # all cores, 0-100: how busy the shared machine was


class ProcessProbe:
    """CPU and RSS of a process, with its children (an engine may fork helpers) unless
    ``children=False`` (the load generator: its children are the workers and the stack)."""

    def __init__(self, pid: int, children: bool = True) -> None:
        self.root = psutil.Process(pid)
        self.children = children
        self._known: dict[int, psutil.Process] = {}

    def usage(self) -> Usage | None:
        try:
            tree = [self.root, *(self.root.children(recursive=True) if self.children else ())]
        except psutil.Error:
            return None
        cpu = 0.0
        rss = 0
        for proc in tree:
            # cpu_percent measures since the previous call on the same Process object.
            known = self._known.setdefault(proc.pid, proc)
            try:
                cpu += known.cpu_percent(interval=None)
                rss += known.memory_info().rss
            except psutil.Error:
                self._known.pop(proc.pid, None)
        return Usage(cpu, rss)


class Sampler:
    def __init__(
        self,
        endpoints: dict[str, str],
        pids: dict[str, int],
        alone: frozenset[str] = frozenset(),
        interval_s: float = 1.0,
    ) -> None:
        """``pids``: process name -> pid; the processes named in ``alone`` count without children."""
        self.endpoints = endpoints  # worker name -> metrics URL
        self.probes = {name: ProcessProbe(pid, children=name not in alone) for name, pid in pids.items()}
        self.interval_s = interval_s
        self.sweeps: list[Sweep] = []
        self.scrape_errors: dict[str, int] = dict.fromkeys(endpoints, 0)
        self.started = time.monotonic()
        self.started_wall = time.time()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="loadtest-sampler", daemon=True)

    def start(self) -> None:
        psutil.cpu_percent(interval=None)
        for probe in self.probes.values():
            probe.usage()  # primes cpu_percent
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def latest(self) -> Sweep | None:
        with self._lock:
            return self.sweeps[-1] if self.sweeps else None

    def sweep_now(self) -> Sweep:
        """One sweep outside the schedule, after ``stop`` (CPU figures measure since the last
        sweep, so two threads must not sweep at once)."""
        sweep = self._sweep()
        with self._lock:
            self.sweeps.append(sweep)
        return sweep

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            sweep = self._sweep()
            with self._lock:
                self.sweeps.append(sweep)
            next_at += self.interval_s
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def _sweep(self) -> Sweep:
        sweep = Sweep(t=time.monotonic() - self.started, machine_cpu_percent=psutil.cpu_percent(interval=None))
        for name, url in self.endpoints.items():
            try:
                with urllib.request.urlopen(url, timeout=2.0) as resp:
                    sweep.metrics[name] = scrape(resp.read().decode())
            except OSError as exc:
                self.scrape_errors[name] += 1
                log.warning("scrape_failed", worker=name, error=str(exc))
        for name, probe in self.probes.items():
            usage = probe.usage()
            if usage is not None:
                sweep.usage[name] = usage
        return sweep
