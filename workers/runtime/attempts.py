"""The retry state machine of one record: after each failure, what the loop does next.

Kept apart from the loop so the rules read in one place and are tested without a broker:
- *unavailable* (our broker, Redis, a model server is down): wait with capped backoff, and the
  try does not count, so an outage never spends a record's attempts or dead-letters it;
- *permanent*: dead-letter now;
- *transient*: retry with exponential backoff until ``max_attempts`` tries, then dead-letter.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from schemas.dead_letter import ErrorKind
from workers.runtime.failures import Failure, backoff_s, classify


class Then(StrEnum):
    RETRY = "retry"  # try again after `delay_s`; the try counted
    WAIT = "wait"  # a dependency is down: try again after `delay_s`; the try did not count
    DEAD_LETTER = "dead_letter"


@dataclass(frozen=True)
class NextStep:
    then: Then
    delay_s: float = 0.0
    kind: ErrorKind | None = None  # set for DEAD_LETTER


@dataclass
class RecordAttempts:
    max_attempts: int
    backoff_base_s: float
    backoff_cap_s: float
    attempt: int = 0  # tries that counted, including the one running
    outages: int = 0  # consecutive waits for a dependency

    def begin(self) -> int:
        """Start a try; returns its number (1-based)."""
        self.attempt += 1
        return self.attempt

    def after_failure(self, exc: BaseException) -> NextStep:
        failure = classify(exc)
        if failure is Failure.UNAVAILABLE:
            self.attempt -= 1
            self.outages += 1
            return NextStep(Then.WAIT, backoff_s(self.backoff_base_s, self.outages, self.backoff_cap_s))
        if failure is Failure.PERMANENT:
            return NextStep(Then.DEAD_LETTER, kind="permanent")
        if self.attempt >= self.max_attempts:
            return NextStep(Then.DEAD_LETTER, kind="transient_exhausted")
        return NextStep(Then.RETRY, backoff_s(self.backoff_base_s, self.attempt, self.backoff_cap_s))
