"""The standard library's loggers carry no secrets either: aiokafka, botocore, uvicorn and vLLM
log through ``logging``, not structlog, and print URLs, configs and exceptions as they are.

uvicorn and vLLM install handlers of their own that do not propagate to the root logger, and
they do it after a worker configured logging (at import, at server start), so a filter on the
root's handlers would miss their lines. The redaction therefore sits where every record is
made, whoever writes it: a record factory that runs ``RedactingFilter`` on each new
``LogRecord``. The message and its arguments go through ``redact_value`` (nested ones too;
objects by ``str``, what ``%s`` shows, and numbers untouched so ``%d`` still works), and an
exception's traceback is formatted and redacted up front into ``exc_text``, which formatters
print instead of formatting it again.
"""

from __future__ import annotations

import logging
from typing import Any

from workers.runtime.redaction import redact_value, safe_text

_FORMATTER = logging.Formatter()


class RedactingFilter(logging.Filter):
    """Redacts a record in place; never drops one."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact_value(record.msg, str)
        if isinstance(record.args, dict):
            record.args = redact_value(record.args, str)
        elif record.args:
            record.args = tuple(redact_value(arg, str) for arg in record.args)
        if record.exc_info and not record.exc_text:
            record.exc_text = _FORMATTER.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = safe_text(record.exc_text)
        if record.stack_info:
            record.stack_info = safe_text(record.stack_info)
        return True


def install_record_redaction() -> None:
    """Every ``LogRecord`` made from now on is redacted (installing twice wraps once)."""
    factory = logging.getLogRecordFactory()
    if getattr(factory, "redacts", False):
        return
    redacting = RedactingFilter()

    def make_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        redacting.filter(record)
        return record

    make_record.redacts = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(make_record)
