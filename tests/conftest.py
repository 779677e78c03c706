"""Shared fixtures: a real local stack (Tansu broker, redis-server, SeaweedFS) on free ports."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from workers.localstack import StackEndpoints, start_stack, stop_stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackEndpoints]:
    data_dir = tmp_path_factory.mktemp("stack")
    endpoints = start_stack(data_dir)
    try:
        yield endpoints
    finally:
        stop_stack(data_dir)


@pytest.fixture
def stack_env(stack: StackEndpoints, monkeypatch: pytest.MonkeyPatch) -> StackEndpoints:
    """Point settings models at the test stack, with a fresh key prefix per test."""
    for key, value in stack.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("CAPSTREAM_KEY_PREFIX", f"t{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("CAPSTREAM_SESSION_TIMEOUT_MS", "3000")
    return stack


@pytest.fixture
def unique() -> str:
    """A suffix for topic and group names so tests never share Kafka state."""
    return uuid.uuid4().hex[:8]


def pytest_report_header() -> list[str]:
    return [f"capstream tests, cpus={os.cpu_count()}, cwd={Path.cwd()}"]
