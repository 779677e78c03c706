"""The client's errors: one type per answer a caller handles differently.

A caller re-asks with another key on ``Unauthorized``, starts the query again on
``CursorExpired``, fixes the named parameter on ``InvalidRequest`` and waits on ``RateLimited``;
everything else the server or the network refused is a plain ``CapstreamError``. The server's
``detail`` is kept as sent (a string, or FastAPI's list of validation errors).
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx


class CapstreamError(Exception):
    """The server answered with an error (``status``), or did not answer at all (``status`` None)."""

    def __init__(self, status: int | None, detail: Any, message: str | None = None) -> None:
        self.status = status
        self.detail = detail
        super().__init__(message or f"{status}: {detail}")


class Unauthorized(CapstreamError):
    """401: the key is missing, malformed, unknown or revoked (the server does not say which)."""


class NotFound(CapstreamError):
    """404: no such object or thumbnail, or one of a collection the key may not see."""


class CursorExpired(CapstreamError):
    """410: the page cursor is gone (expired, another key's, or its index version compacted)."""


class InvalidRequest(CapstreamError):
    """422: a parameter out of range; ``param`` names it when FastAPI's ``loc`` does."""

    def __init__(self, status: int | None, detail: Any, param: str | None = None) -> None:
        self.param = param
        super().__init__(status, detail, f"{status}: {detail}" if param is None else f"{status} ({param}): {detail}")


class RateLimited(CapstreamError):
    """429, still after the retries (or with a wait longer than the client may sleep)."""

    def __init__(self, status: int | None, detail: Any, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(status, detail)


class AskFailed(CapstreamError):
    """``/ask`` accepted the question (200) and then reported an error in its stream, or ended
    without an answer."""

    def __init__(self, detail: str) -> None:
        super().__init__(200, detail, f"ask failed: {detail}")


class NoResponse(CapstreamError):
    """No answer, still after the retries: unreachable, the connection lost, or a timeout (the
    httpx error is chained as the cause)."""

    def __init__(self, detail: str) -> None:
        super().__init__(None, detail, f"no answer: {detail}")


def retry_after_s(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds, or None without one (an HTTP date is read as a wait too)."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _detail(response: httpx.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        return response.text
    return body.get("detail", body) if isinstance(body, dict) else body


def _param(detail: Any) -> str | None:
    """The parameter of FastAPI's first validation error, e.g. ``k`` of ``loc: ["query", "k"]``."""
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        loc = detail[0].get("loc")
        if isinstance(loc, list | tuple) and loc:
            return str(loc[-1])
    return None


def error_for(response: httpx.Response) -> CapstreamError:
    """The error a final error response raises."""
    status, detail = response.status_code, _detail(response)
    if status == 401:
        return Unauthorized(status, detail)
    if status == 404:
        return NotFound(status, detail)
    if status == 410:
        return CursorExpired(status, detail)
    if status == 422:
        return InvalidRequest(status, detail, _param(detail))
    if status == 429:
        return RateLimited(status, detail, retry_after_s(response))
    return CapstreamError(status, detail)
