"""Error text that leaves a worker (log lines, dead letters, progress `error`) carries no secrets.

A presigned S3 URL holds `X-Amz-Credential` and `X-Amz-Signature` in its query string, and
FFmpeg, botocore and httpx all put the URL they were reading into their exception messages
(a read that fails mid-stream because the object was deleted or the URL expired is enough).
Redacting at each call site missed those, so the three exits (``dead_letter_for``,
``ProgressStore.fail`` and the log processor) pass every text through ``safe_text``. A log
line's values are redacted however deep they sit (a request dict, a list of URLs), and a
value under a credential's key (``password``, ``api_key``, ``Authorization``...) is dropped
whole: a bare key or token has no shape a pattern could find. The standard library's loggers
get the same treatment in ``workers.runtime.stdlib_redaction``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

REDACTED = "REDACTED"

# scheme://[userinfo@]rest[?query]: the userinfo and the whole query string go.
_URL = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)([^\s/?#'\"<>@]*@)?([^\s?#'\"<>]*)(\?[^\s#'\"<>]*)?")
# Signature parameters quoted without their URL (e.g. `...&X-Amz-Signature=ab12`).
_SIGNED_PARAM = re.compile(
    r"(?i)\b(X-Amz-(?:Credential|Signature|Security-Token)|AWSAccessKeyId|Signature|sig)=[^&\s'\"<>]+"
)
# Keys whose value is a credential, alone or as a key's last part (`sasl_plain_password`,
# `x-api-key`, `X-Amz-Security-Token`); not counts such as `prompt_tokens`.
_CREDENTIAL_NAMES = (
    "pass", "passwd", "password", "secret", "secret_key", "secret_access_key", "api_key", "apikey", "token",
    "authorization", "authorisation", "credential", "credentials", "private_key",
)  # fmt: skip
# Shown as they are: nothing in them can be a secret.
_PLAIN = (int, float, bool, type(None))
_MAX_DEPTH = 16  # deeper (or self-containing) values are shown whole, redacted


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


def is_credential_key(key: object) -> bool:
    if not isinstance(key, str):
        return False
    k = key.lower().replace("-", "_")
    return any(k == n or k.endswith(("_" + n, "." + n)) for n in _CREDENTIAL_NAMES)


def redact_value(value: Any, show: Callable[[Any], object] = repr, depth: int = 0) -> Any:
    """``value`` with every string in it redacted, containers (mappings, lists, tuples, sets)
    walked, credential keys' values replaced; any other object is replaced by its redacted
    ``show(value)`` (``repr``, what a JSON or console renderer would show) when that hides
    something, else kept as it is."""
    if isinstance(value, str):
        return safe_text(value)
    if isinstance(value, _PLAIN):
        return value
    if depth < _MAX_DEPTH and isinstance(value, Mapping):
        return {k: REDACTED if is_credential_key(k) else redact_value(v, show, depth + 1) for k, v in value.items()}
    if depth < _MAX_DEPTH and isinstance(value, list | tuple | set | frozenset):
        items = [redact_value(v, show, depth + 1) for v in value]
        return tuple(items) if isinstance(value, tuple) else items
    try:
        shown = str(show(value))
    except Exception:  # noqa: BLE001 - a broken __repr__ must not cost the log line
        return f"<unprintable {type(value).__name__}>"
    cleaned = safe_text(shown)
    return value if cleaned == shown else cleaned


def redact_log_values(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: every value of a log line, nested ones too, goes through
    ``redact_value``; a credential key's value is dropped."""
    for key, value in event_dict.items():
        event_dict[key] = REDACTED if is_credential_key(key) else redact_value(value)
    return event_dict
