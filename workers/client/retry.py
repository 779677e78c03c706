"""When the client asks again, and after how long: shared by the sync and the async client.

Every route is a GET, so a repeat never does anything twice on the server. Retried: 429 after
its ``Retry-After`` (the per-key limiter says when a request will be counted again), 502/503/504
(a proxy in front, or a server still starting: its key store answers 503 until Redis is up), and
requests that never reached the server or lost the connection. Not retried: any other 4xx (the
same request gets the same answer), and a read timeout (the server has the query and is slow;
asking again would only add load, and the caller's ``timeout`` already said how long is too long).

Waits grow exponentially with "equal jitter" (half the step fixed, half random), so clients
refused together do not come back together. A ``Retry-After`` longer than ``max_retry_after``
is not slept through: the client raises ``RateLimited`` with it at once and the caller decides.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import httpx

RETRY_STATUSES = frozenset({502, 503, 504})
# The transport errors where the request did not reach the server or the answer was cut off.
RETRY_ERRORS: tuple[type[Exception], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
    httpx.PoolTimeout,
)


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 3  # repeats after the first try: at most retries + 1 requests
    backoff: float = 0.5  # the first wait, in seconds; doubles each repeat
    max_backoff: float = 8.0
    max_retry_after: float = 30.0  # the longest Retry-After the client sleeps through

    def backoff_s(self, attempt: int) -> float:
        """The wait before repeat number ``attempt`` (0-based) after a 5xx or a lost connection."""
        step = min(self.max_backoff, self.backoff * 2**attempt)
        return step / 2 + random.uniform(0, step / 2)

    def wait_after(self, response: httpx.Response, retry_after: float | None, attempt: int) -> float | None:
        """Seconds to wait before asking again after ``response``, or None to stop and raise."""
        if attempt >= self.retries:
            return None
        if response.status_code == 429:
            if retry_after is None:
                return self.backoff_s(attempt)
            return retry_after if retry_after <= self.max_retry_after else None
        if response.status_code in RETRY_STATUSES:
            return self.backoff_s(attempt)
        return None

    def wait_after_error(self, error: Exception, attempt: int) -> float | None:
        """Seconds to wait before asking again after a transport error, or None to raise it."""
        if attempt >= self.retries or not isinstance(error, RETRY_ERRORS):
            return None
        return self.backoff_s(attempt)
