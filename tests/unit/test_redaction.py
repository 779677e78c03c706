"""No secret leaves a worker in error text: dead letters, progress errors and log lines, the
standard library's loggers (aiokafka, botocore, uvicorn, vLLM) and values nested in a log
line included."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import structlog

from schemas.dead_letter import DeadLetter
from workers.runtime.dead_letters import dead_letter_for, describe
from workers.runtime.logging import configure_logging
from workers.runtime.redaction import redact_urls, safe_text
from workers.runtime.stage import RecordContext
from workers.settings import CaptionSettings, EmbedSettings, ModelStageSettings

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


NESTED_SECRETS = ("hunter2", "sk-live-4f9a", "CAPSTREAMPOFJHLD0AJZ")


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """configure_logging into a buffer; structlog and the stdlib record factory put back after."""
    stream, factory = io.StringIO(), logging.getLogRecordFactory()
    configure_logging("INFO", "json", stream=stream)
    try:
        yield stream
    finally:
        structlog.reset_defaults()
        logging.setLogRecordFactory(factory)


def test_nested_values_and_credential_keys_are_redacted(json_log: io.StringIO) -> None:
    structlog.get_logger("test").warning(
        "request_failed",
        request={"url": PRESIGNED, "tries": [{"redis": "redis://:hunter2@10.0.0.5:6379/0"}, ("s3://b/k", 3)]},
        headers={"Authorization": "Bearer sk-live-4f9a", "Accept": "application/json"},
        api_key="sk-live-4f9a",
        prompt_tokens=12,
    )
    out = json_log.getvalue()
    assert not any(s in out for s in NESTED_SECRETS), out
    line = json.loads(out)
    assert line["request"]["tries"][0]["redis"] == "redis://REDACTED@10.0.0.5:6379/0"
    assert line["request"]["tries"][1] == ["s3://b/k", 3] and line["prompt_tokens"] == 12
    assert line["headers"] == {"Authorization": "REDACTED", "Accept": "application/json"}


@pytest.mark.parametrize("name", ["aiokafka.consumer", "botocore.endpoint", "uvicorn.error", "vllm.engine"])
def test_standard_library_loggers_are_redacted_whatever_their_handlers(json_log: io.StringIO, name: str) -> None:
    """uvicorn and vLLM install handlers of their own that do not propagate to the root: the
    redaction must hold for a record wherever it is written."""
    own = io.StringIO()
    logger = logging.getLogger(name)
    handler = logging.StreamHandler(own)
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("GET %s failed: %s", PRESIGNED, OSError(5, "Input/output error", PRESIGNED))
        logger.warning("config %s", {"sasl": {"password": "hunter2"}, "urls": ["https://u:hunter2@h.example/x"]})
        try:
            raise ConnectionError(f"connect to redis://:hunter2@h:6379 failed reading {PRESIGNED}")
        except ConnectionError:
            logger.exception("giving up on %s", "https://user:hunter2@h.example/v.mp4")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    text = own.getvalue()
    assert text.count(name) == 3 and "Traceback" in text and "v.mp4?REDACTED" in text
    assert _clean(text) and "hunter2" not in text, text


@pytest.mark.parametrize(
    ("settings_cls", "field"), [(CaptionSettings, "caption_openai_api_key"), (EmbedSettings, "embed_openai_api_key")]
)
def test_api_keys_are_secret_in_settings_and_their_serving_view(
    settings_cls: type[ModelStageSettings], field: str, json_log: io.StringIO
) -> None:
    """A settings object or its ``ModelServing`` logged, printed or dumped shows no key; only
    ``get_secret_value()`` (the HTTP client's header) reads it."""
    settings = settings_cls.model_validate({field: "sk-live-4f9a"})
    serving = settings.serving
    structlog.get_logger("test").info("settings", settings=settings, serving=serving, dump=settings.model_dump())
    shown = [repr(settings), str(settings), settings.model_dump_json(), repr(serving), json_log.getvalue()]
    assert not any("sk-live-4f9a" in text for text in shown), shown
    assert serving.openai_api_key.get_secret_value() == "sk-live-4f9a"
