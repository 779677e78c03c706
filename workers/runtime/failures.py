"""Failure taxonomy: what the consumer loop does with an exception from a stage.

- PERMANENT: the input can never succeed (bad event, corrupt media, oversized object):
  dead-letter at once.
- TRANSIENT: might succeed on another try (S3/HTTP 5xx, vLLM overload, an engine error):
  retry with exponential backoff and jitter, bounded, then dead-letter.
- UNAVAILABLE: our own infrastructure is down (broker, Redis, the model server): nothing is
  wrong with the input, so never dead-letter it; wait with capped backoff, keep the offset
  uncommitted, and continue when the service is back.

Some exceptions are permanent by their type, whoever raises them: they come from the input's
content (nesting too deep to walk, text that is not Unicode, a picture that declares more
pixels than Pillow will decode), so another try ends the same way. They get a reason code of
their own instead of `retries_exhausted`.
"""

from __future__ import annotations

import random
from enum import StrEnum

import httpx
from aiokafka import errors as kafka_errors
from PIL import Image
from redis import exceptions as redis_errors

from workers.runtime.errors import PermanentError, UnavailableError


class Failure(StrEnum):
    PERMANENT = "permanent"
    TRANSIENT = "transient"
    UNAVAILABLE = "unavailable"


_UNAVAILABLE: tuple[type[BaseException], ...] = (
    redis_errors.ConnectionError,  # includes BusyLoadingError while Redis replays its AOF
    redis_errors.TimeoutError,
    kafka_errors.KafkaConnectionError,
    kafka_errors.KafkaTimeoutError,
    kafka_errors.RequestTimedOutError,
    kafka_errors.NodeNotReadyError,
    kafka_errors.NotLeaderForPartitionError,
    kafka_errors.LeaderNotAvailableError,
    kafka_errors.NotEnoughReplicasError,
    kafka_errors.ProducerClosed,
    httpx.ConnectError,
    httpx.ConnectTimeout,
    ConnectionRefusedError,
    UnavailableError,  # raised by stages for their own stores (the index table)
)


_PERMANENT_BY_TYPE: tuple[tuple[type[BaseException], str], ...] = (
    (RecursionError, "input_too_deep"),
    (UnicodeError, "invalid_text"),
    (Image.DecompressionBombError, "resolution_too_large"),
)


def permanent_reason(exc: BaseException) -> str | None:
    """The reason code of an exception that is permanent by its type, else None."""
    for cls, reason in _PERMANENT_BY_TYPE:
        if isinstance(exc, cls):
            return reason
    return None


def classify(exc: BaseException) -> Failure:
    if isinstance(exc, PermanentError) or permanent_reason(exc) is not None:
        return Failure.PERMANENT
    if isinstance(exc, _UNAVAILABLE):
        return Failure.UNAVAILABLE
    return Failure.TRANSIENT


def backoff_s(base_s: float, attempt: int, cap_s: float) -> float:
    """Exponential backoff, capped, then jittered by ±50% (a factor in [0.5, 1.5), not full jitter)."""
    return min(cap_s, base_s * 2 ** max(0, attempt - 1)) * (0.5 + random.random())
