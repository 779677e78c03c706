"""`capstream worker` serves Prometheus metrics that say what happened to each record.

A real decode worker process on the test stack, scraped over HTTP: outcomes (done, duplicate,
dead-lettered with its reason), outputs, video seconds, and lag back to zero once the records
are committed.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.request
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from loadtest.media_factory import make_image
from workers.cli.worker_process import spawn_worker, stop_worker
from workers.localstack import StackEndpoints
from workers.runtime.kafka import ensure_topics
from workers.runtime.metrics import scrape, total
from workers.settings import DecodeSettings
from workers.stages import REGISTRY

pytestmark = pytest.mark.integration


def _metrics_url(log_path: Path, timeout_s: float = 60.0) -> str:
    """The worker states where it serves metrics (port 0 = it picked a free one)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace") if log_path.exists() else ""
        for line in text.splitlines():
            entry = json.loads(line) if line.startswith("{") else {}
            if entry.get("event") == "metrics_serving":
                return str(entry["url"])
        time.sleep(0.2)
    raise AssertionError(f"worker never stated its metrics port:\n{text[-2000:]}")


def _fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return str(resp.read().decode())


async def test_decode_worker_metrics_count_outcomes_and_lag(
    stack_env: StackEndpoints, unique: str, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "CAPSTREAM_ALLOWED_SCHEMES": "file",
        "CAPSTREAM_TOPIC_OBJECTS": f"objects-{unique}",
        "CAPSTREAM_TOPIC_SEGMENTS": f"segments-{unique}",
        "CAPSTREAM_DECODE_GROUP": f"decode-{unique}",
        "CAPSTREAM_METRICS_PORT": "0",
    }
    settings = DecodeSettings(
        allowed_schemes="file",
        topic_objects=env["CAPSTREAM_TOPIC_OBJECTS"],
        topic_segments=env["CAPSTREAM_TOPIC_SEGMENTS"],
    )
    await ensure_topics(settings, REGISTRY.topics(settings))
    image = tmp_path / "cat.png"
    make_image(image, "png")
    event = json.dumps({"uri": f"file://{image}"}).encode()
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic_objects, event, key=b"cat")
        await producer.send_and_wait(settings.topic_objects, event, key=b"cat")  # the same object again
        await producer.send_and_wait(settings.topic_objects, b"{not json", key=b"bad")
    finally:
        await producer.stop()

    log_path = tmp_path / "decode.log"
    proc = spawn_worker(["worker", "decode"], env, log_path)
    try:
        url = await asyncio.to_thread(_metrics_url, log_path)
        deadline = time.monotonic() + 90
        while True:
            samples = scrape(await asyncio.to_thread(_fetch, url))
            done = total(samples, "capstream_records_total", stage="decode", outcome="done")
            dup = total(samples, "capstream_records_total", stage="decode", outcome="duplicate")
            dead = total(samples, "capstream_records_total", stage="decode", outcome="dead_lettered")
            lag = [v for (n, lbl), v in samples.items() if n == "capstream_consumer_lag" and ("stage", "decode") in lbl]
            if (done, dup, dead) == (1, 1, 1) and lag and not any(lag):
                break
            assert time.monotonic() < deadline, f"done={done} dup={dup} dead={dead} lag={lag}"
            await asyncio.sleep(0.5)
        assert total(samples, "capstream_dead_letters_total", stage="decode", reason="malformed_json") == 1
        assert total(samples, "capstream_output_records_total", stage="decode", topic=settings.topic_segments) == 1
        assert total(samples, "capstream_record_processing_seconds_count", stage="decode") == 3
        assert total(samples, "capstream_records_in_flight", stage="decode") == 0
        assert total(samples, "capstream_consumer_paused", stage="decode") == 0
        # The duplicate was never opened: one read of the file.
        assert total(samples, "capstream_source_bytes_read_total", stage="decode") == image.stat().st_size
    finally:
        stop_worker(proc)
