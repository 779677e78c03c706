"""Fixtures of integration tests that kill the broker: a stack whose broker stores on the S3
store, so what was produced survives a ``kill -9``."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from tests.durable_stack import DurableStack
from workers.localstack import start_stack, stop_stack
from workers.runtime import kafka


@pytest.fixture(scope="module")
def durable_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DurableStack]:
    data_dir = tmp_path_factory.mktemp("durable-stack")
    stack = DurableStack(start_stack(data_dir, durable_kafka=True))
    try:
        yield stack
    finally:
        stop_stack(data_dir)


@pytest.fixture
def durable_env(durable_stack: DurableStack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """Settings pointed at the durable stack, with topics of this test's own."""
    suffix = uuid.uuid4().hex[:8]
    values = {
        **durable_stack.endpoints.env(),
        "CAPSTREAM_KEY_PREFIX": f"t{suffix}",
        "CAPSTREAM_INDEX_URI": str(tmp_path / "index"),
        **{f"CAPSTREAM_TOPIC_{t}": f"{t.lower()}-{suffix}" for t in ("OBJECTS", "SEGMENTS", "CAPTIONS", "EMBEDDINGS")},
        "CAPSTREAM_TOPIC_REMOVALS": f"removals-{suffix}",
        "CAPSTREAM_TOPIC_FILER_EVENTS": f"filer-{suffix}",
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values


@pytest.fixture
def first_fetch(monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Set when the reader's consumer has fetched its first records."""
    fetched = asyncio.Event()

    class Observed(AIOKafkaConsumer):
        async def getmany(self, *partitions: Any, timeout_ms: int = 0, max_records: int | None = None) -> Any:
            batch = await super().getmany(*partitions, timeout_ms=timeout_ms, max_records=max_records)
            if batch:
                fetched.set()
            return batch

    monkeypatch.setattr(kafka, "AIOKafkaConsumer", Observed)
    return fetched
