"""The per-record retry state machine, without a broker."""

from __future__ import annotations

from redis.exceptions import ConnectionError as RedisConnectionError

from workers.runtime.attempts import RecordAttempts, Then
from workers.runtime.errors import PermanentError


def _attempts(max_attempts: int = 3) -> RecordAttempts:
    return RecordAttempts(max_attempts=max_attempts, backoff_base_s=0.1, backoff_cap_s=1.0)


def test_transient_failures_retry_with_growing_backoff_then_dead_letter() -> None:
    a = _attempts(3)
    delays = []
    for expected_try in (1, 2):
        assert a.begin() == expected_try
        step = a.after_failure(RuntimeError("blip"))
        assert step.then is Then.RETRY
        delays.append(step.delay_s)
    assert a.begin() == 3
    final = a.after_failure(RuntimeError("blip"))
    assert final.then is Then.DEAD_LETTER and final.kind == "transient_exhausted"
    # ±50% jitter: [0.5, 1.5) x base * 2^(try-1): the second delay's range starts above the first's midpoint.
    assert 0.05 <= delays[0] < 0.15 and 0.1 <= delays[1] < 0.3


def test_permanent_failures_dead_letter_at_once() -> None:
    a = _attempts(5)
    a.begin()
    step = a.after_failure(PermanentError("corrupt_media", "bad"))
    assert step.then is Then.DEAD_LETTER and step.kind == "permanent"


def test_outages_never_spend_attempts() -> None:
    a = _attempts(2)
    for _ in range(10):
        a.begin()
        step = a.after_failure(RedisConnectionError("redis down"))
        assert step.then is Then.WAIT and step.delay_s <= 1.5
    assert a.begin() == 1, "ten outages later, this is still the first counted try"
    assert a.after_failure(RuntimeError("blip")).then is Then.RETRY
