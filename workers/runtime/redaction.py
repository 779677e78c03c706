"""Error text that leaves a worker (log lines, dead letters, progress `error`) carries no secrets.

A presigned S3 URL holds `X-Amz-Credential` and `X-Amz-Signature` in its query string, and
FFmpeg, botocore and httpx all put the URL they were reading into their exception messages
(a read that fails mid-stream because the object was deleted or the URL expired is enough).
Redacting at each call site missed those, so the three exits (``dead_letter_for``,
``ProgressStore.fail`` and the log processor) pass every text through ``safe_text``.
"""

from __future__ import annotations

import re
from collections.abc import MutableMapping
from typing import Any

REDACTED = "REDACTED"

# scheme://[userinfo@]rest[?query]: the userinfo and the whole query string go.
_URL = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)([^\s/?#'\"<>@]*@)?([^\s?#'\"<>]*)(\?[^\s#'\"<>]*)?")
# Signature parameters quoted without their URL (e.g. `...&X-Amz-Signature=ab12`).
_SIGNED_PARAM = re.compile(
    r"(?i)\b(X-Amz-(?:Credential|Signature|Security-Token)|AWSAccessKeyId|Signature|sig)=[^&\s'\"<>]+"
)


def redact_urls(text: str) -> str:
    """`text` with every URL's credentials and query string replaced."""

    def url(m: re.Match[str]) -> str:
        scheme, userinfo, rest, query = m.group(1), m.group(2), m.group(3), m.group(4)
        return scheme + (f"{REDACTED}@" if userinfo else "") + rest + (f"?{REDACTED}" if query else "")

    return _SIGNED_PARAM.sub(lambda m: f"{m.group(1)}={REDACTED}", _URL.sub(url, text))


def safe_text(text: str, limit: int | None = None) -> str:
    """Redacted, valid UTF-8 (lone surrogates escaped), at most `limit` characters."""
    cleaned = redact_urls(text).encode("utf-8", "backslashreplace").decode("utf-8")
    return cleaned if limit is None else cleaned[:limit]


def redact_log_values(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: every string value of a log line goes through ``safe_text``."""
    for key, value in event_dict.items():
        if isinstance(value, str):
            event_dict[key] = safe_text(value)
    return event_dict
