"""Failure taxonomy: what the consumer loop does with an exception from a stage.

- PERMANENT: the input can never succeed (bad event, corrupt media, oversized object):
  dead-letter at once.
- TRANSIENT: might succeed on another try (S3/HTTP 5xx, vLLM overload, an engine error):
  retry with exponential backoff and jitter, bounded, then dead-letter.
- UNAVAILABLE: our own infrastructure is down (broker, Redis, the model server): nothing is
  wrong with the input, so never dead-letter it; wait with capped backoff, keep the offset
  uncommitted, and continue when the service is back.
"""

from __future__ import annotations

import random
from enum import StrEnum

import httpx
from aiokafka import errors as kafka_errors
from redis import exceptions as redis_errors

from workers.runtime.errors import PermanentError


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
)


def classify(exc: BaseException) -> Failure:
    if isinstance(exc, PermanentError):
        return Failure.PERMANENT
    if isinstance(exc, _UNAVAILABLE):
        return Failure.UNAVAILABLE
    return Failure.TRANSIENT


def backoff_s(base_s: float, attempt: int, cap_s: float) -> float:
    """Exponential backoff with full jitter in [0.5, 1.5) x, capped."""
    return min(cap_s, base_s * 2 ** max(0, attempt - 1)) * (0.5 + random.random())
