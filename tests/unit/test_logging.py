"""Log lines go to the stderr of the moment: cached loggers must survive a swapped stream."""

from __future__ import annotations

import io
import sys

import pytest
import structlog

from workers.runtime.logging import configure_logging


def test_a_cached_logger_writes_to_the_current_stderr_not_a_closed_one(monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    configure_logging("INFO", "json")
    try:
        log = structlog.get_logger("capstream.test_logging")
        log.info("before")  # caches the logger (cache_logger_on_first_use)
        first.close()  # e.g. a test runner's capture of an earlier test
        monkeypatch.setattr(sys, "stderr", second)
        log.info("after")  # raised "I/O operation on closed file" inside a stage loop before
    finally:
        structlog.reset_defaults()
    assert '"event": "after"' in second.getvalue()
