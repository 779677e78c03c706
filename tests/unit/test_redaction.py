"""No secret leaves a worker in error text: dead letters, progress errors and log lines."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

import structlog

from schemas.dead_letter import DeadLetter
from workers.runtime.dead_letters import dead_letter_for, describe
from workers.runtime.logging import configure_logging
from workers.runtime.redaction import redact_urls, safe_text
from workers.runtime.stage import RecordContext

PRESIGNED = (
    "http://127.0.0.1:17209/media/v.mp4?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Credential=CAPSTREAMPOFJHLD0AJZ%2F20261130%2Fus-east-1%2Fs3%2Faws4_request"
    "&X-Amz-Date=20261130T104026Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host"
    "&X-Amz-Signature=3b5552dae8817dca014872dff00f0de5d219e402d84169a9133fc67bf9191b8f"
)
# What FFmpeg raised when the object was deleted mid-stream (seen with SeaweedFS).
FFMPEG_ERROR = f"[Errno 5] Input/output error: '{PRESIGNED}'"
SECRETS = ("CAPSTREAMPOFJHLD0AJZ", "3b5552dae8817dca", "X-Amz-Date=2026")


def _clean(text: str) -> bool:
    return not any(s in text for s in SECRETS)


def test_urls_keep_host_and_path_but_lose_query_and_userinfo() -> None:
    out = redact_urls(f"read failed: {FFMPEG_ERROR} and https://user:pw@host.example/a/b?sig=1 and s3://b/k")
    assert _clean(out) and "pw" not in out
    assert "http://127.0.0.1:17209/media/v.mp4?REDACTED" in out
    assert "https://REDACTED@host.example/a/b?REDACTED" in out and "s3://b/k" in out


def test_signature_parameters_quoted_without_their_url_are_redacted() -> None:
    out = redact_urls("params X-Amz-Signature=abcdef&X-Amz-Credential=AKIA123/2026 left")
    assert "abcdef" not in out and "AKIA123" not in out and out.endswith(" left")


def test_safe_text_escapes_lone_surrogates_so_letters_serialise() -> None:
    text = safe_text("key \ud800 broke it")
    text.encode("utf-8")
    assert "\\ud800" in text


def _ctx(value: bytes = b"{}", key: str | None = "media/v.mp4") -> RecordContext:
    return RecordContext(
        "media.objects", 0, 7, key, value, 3, structlog.get_logger(), datetime.now(UTC), datetime.now(UTC)
    )


def test_dead_letter_message_carries_no_presigned_url() -> None:
    out = dead_letter_for("decode", _ctx(), OSError(5, "Input/output error", PRESIGNED), "transient_exhausted")
    letter = out.value
    assert isinstance(letter, DeadLetter)
    assert _clean(letter.message) and "v.mp4?REDACTED" in letter.message
    assert _clean(letter.to_bytes().decode())


def test_log_lines_carry_no_presigned_url_even_in_tracebacks() -> None:
    stream = io.StringIO()
    configure_logging("INFO", "json", stream=stream)
    try:
        log = structlog.get_logger("test")
        log.warning("retrying", error=describe(OSError(5, "Input/output error", PRESIGNED)), url=PRESIGNED)
        try:
            raise OSError(5, "Input/output error", PRESIGNED)
        except OSError:
            log.exception("decode_failed")
    finally:
        structlog.reset_defaults()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 2 and "v.mp4?REDACTED" in lines[0]["url"]
    assert "exception" in lines[1]
    assert _clean(stream.getvalue()), stream.getvalue()
