"""Prometheus metrics of one worker process, and the ``/metrics`` endpoint that serves them.

Every metric lives in the process's own ``CollectorRegistry`` (``WorkerMetrics``), never in
prometheus-client's global one: two loops in one process (``capstream run``) share a registry
and tell themselves apart by the ``stage`` label, and a test builds as many as it likes.
Names follow Prometheus conventions (``capstream_…_total`` counters, ``…_seconds``
histograms); docs/metrics.md lists them, and the load test reads them back.

Lag is what an autoscaler needs: per partition, the broker's high watermark (from the last
fetch) minus this group's committed offset, so it counts records fetched but unfinished.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

# Seconds from about 10 ms (an embed) to ten minutes (a long decode, a backlog's tail).
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Outcome(enum.StrEnum):
    """How a record left the stage (``capstream_records_total{outcome}``)."""

    DONE = "done"
    DUPLICATE = "duplicate"  # already claimed or finished elsewhere: skipped
    STALE = "stale"  # an older version of something newer already seen: skipped
    FILTERED = "filtered"  # the event filters turned it away
    RETRIED = "retried"  # one failed try that will be tried again (not terminal)
    DEAD_LETTERED = "dead_lettered"


class WorkerMetrics:
    """The metrics of one worker process; ``for_stage`` hands a stage its labelled view."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.records = Counter("capstream_records", "Records handled, by outcome", ["stage", "outcome"], registry=r)
        self.processing = Histogram(
            "capstream_record_processing_seconds",
            "Time from taking a record to finishing it (outputs acknowledged, effects written)",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("capstream_records_in_flight", "Records taken and not finished", ["stage"], registry=r)
        self.paused = Gauge("capstream_consumer_paused", "1 while every in-flight slot is taken", ["stage"], registry=r)
        self.lag = Gauge(
            "capstream_consumer_lag",
            "High watermark minus the group's committed offset",
            ["stage", "group", "topic", "partition"],
            registry=r,
        )
        self.outputs = Counter(
            "capstream_output_records", "Records produced (acknowledged or not)", ["stage", "topic"], registry=r
        )
        self.dead_letters = Counter(
            "capstream_dead_letters", "Dead letters written, by reason", ["stage", "reason"], registry=r
        )
        self.outage_waits = Counter(
            "capstream_outage_waits",
            "Waits for Kafka, Redis or a model server that was down (the record's tries not spent)",
            ["stage"],
            registry=r,
        )
        self.commits = Counter("capstream_commits", "Offset commits acknowledged by the group", ["stage"], registry=r)
        self.pauses = Counter(
            "capstream_consumer_pauses",
            "Times every in-flight slot filled and consumption paused",
            ["stage"],
            registry=r,
        )
        self.model_requests = Counter(
            "capstream_model_requests", "Requests sent to the model (one per segment try)", ["stage"], registry=r
        )
        self.engine_batch = Histogram(
            "capstream_engine_batch_size", "Requests per in-process engine step", ["stage"], buckets=_BATCH_BUCKETS,
            registry=r,
        )  # fmt: skip
        self.webhook_posts = Counter(
            "capstream_webhook_posts", "Webhook POSTs, by result (delivered, failed)", ["stage", "result"], registry=r
        )
        self.tokens = Counter("capstream_tokens", "Model tokens, prompt or completion", ["stage", "kind"], registry=r)
        self.video_seconds = Counter(
            "capstream_video_seconds_decoded", "Media seconds cut into segments", ["stage"], registry=r
        )
        self.source_bytes = Counter(
            "capstream_source_bytes_read",
            "Size of source objects opened for decode (S3, file or http)",
            ["stage"],
            registry=r,
        )
        self.event_to_indexed = Histogram(
            "capstream_event_to_indexed_seconds",
            "From the object's event time to its segment's row being in the index",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )

    def for_stage(self, stage: str) -> StageMetrics:
        return StageMetrics(self, stage)

    def serve(self, port: int, host: str) -> int:
        """Serve ``/metrics`` on a daemon thread; the bound port (``port=0`` picks a free one)."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        bound: int = server.server_port
        structlog.get_logger("capstream.metrics").info(
            "metrics_serving", url=f"http://{host}:{bound}/metrics", port=bound
        )
        return bound


class StageMetrics:
    """One stage's view of ``WorkerMetrics``: every call is already labelled with the stage."""

    def __init__(self, metrics: WorkerMetrics, stage: str) -> None:
        self.metrics = metrics
        self.stage = stage
        m = metrics
        self.processing = m.processing.labels(stage)
        self.in_flight = m.in_flight.labels(stage)
        self.paused = m.paused.labels(stage)
        self.outage_waits = m.outage_waits.labels(stage)
        self.commits = m.commits.labels(stage)
        self.pauses = m.pauses.labels(stage)
        self.model_requests = m.model_requests.labels(stage)
        self.engine_batch = m.engine_batch.labels(stage)
        self.video_seconds = m.video_seconds.labels(stage)
        self.source_bytes = m.source_bytes.labels(stage)
        self.event_to_indexed = m.event_to_indexed.labels(stage)

    def total(self, counter: Counter, **labels: str) -> int:
        """This stage's count of ``counter``, summed over its other labels (read back from the
        registry, so what a test or the load run reads is what ``/metrics`` says)."""
        wanted = {"stage": self.stage, **labels}
        return int(
            sum(
                sample.value
                for metric in counter.collect()
                for sample in metric.samples
                if sample.name.endswith("_total") and wanted.items() <= sample.labels.items()
            )
        )

    def record(self, outcome: Outcome) -> None:
        self.metrics.records.labels(self.stage, outcome.value).inc()

    def output(self, topic: str) -> None:
        self.metrics.outputs.labels(self.stage, topic).inc()

    def dead_letter(self, reason: str) -> None:
        self.metrics.dead_letters.labels(self.stage, reason).inc()

    def tokens(self, prompt: int | None, completion: int | None) -> None:
        if prompt:
            self.metrics.tokens.labels(self.stage, "prompt").inc(prompt)
        if completion:
            self.metrics.tokens.labels(self.stage, "completion").inc(completion)

    def set_lag(self, group: str, lags: Iterable[tuple[str, int, int]]) -> None:
        """``(topic, partition, lag)`` for every partition this stage owns now."""
        for topic, partition, lag in lags:
            self.metrics.lag.labels(self.stage, group, topic, str(partition)).set(max(lag, 0))

    def forget_partitions(self, group: str, partitions: Iterable[tuple[str, int]]) -> None:
        """Partitions moved to another worker: their lag is that worker's to report now."""
        for topic, partition in partitions:
            try:
                self.metrics.lag.remove(self.stage, group, topic, str(partition))
            except KeyError:
                pass


def scrape(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Parse a ``/metrics`` page: ``{(sample name, sorted labels): value}`` (for readers of the
    endpoint: the load test, the chaos verifier, the tests)."""
    from prometheus_client.parser import text_string_to_metric_families

    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return samples


def total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: Any) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``."""
    want = {k: str(v) for k, v in labels.items()}
    return sum(v for (n, lbl), v in samples.items() if n == name and want.items() <= dict(lbl).items())
