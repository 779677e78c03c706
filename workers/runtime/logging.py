"""structlog setup: JSON lines for machines, console rendering for people; secrets redacted
from every line, structlog's and the standard library loggers' (``stdlib_redaction``)."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

from workers.runtime.redaction import redact_log_values
from workers.runtime.stdlib_redaction import install_record_redaction


class _CurrentStderr:
    """Whatever ``sys.stderr`` is when a line is written, not when logging was configured:
    loggers are cached on first use, and a stream swapped since (a test runner's capture, a
    CLI redirect) may be closed by then."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(level: str = "INFO", fmt: str = "json", stream: TextIO | None = None) -> None:
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    install_record_redaction()  # before basicConfig: no record of a library escapes it
    logging.basicConfig(level=level.upper(), stream=sys.stderr, format="%(message)s")
    # Third-party chatter (aiokafka reconnects, vLLM init) stays at WARNING unless asked.
    for noisy in ("aiokafka", "vllm", "botocore", "aiobotocore", "httpx", "transformers"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level.upper())))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_log_values,  # after format_exc_info: tracebacks quote URLs too
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=stream or _CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
