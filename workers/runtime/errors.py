"""Failure taxonomy: permanent errors go to the DLQ at once, everything else is retried."""

from __future__ import annotations


class PermanentError(Exception):
    """Input that will never succeed (bad event, corrupt media, oversized object...)."""

    def __init__(
        self, reason: str, message: str, *, object_id: str | None = None, segment_id: str | None = None
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.object_id = object_id
        self.segment_id = segment_id


class FatalWorkerError(Exception):
    """The worker cannot keep its at-least-once promise (e.g. the DLQ is unwritable): stop
    without committing, so a restart reprocesses."""


class UnavailableError(Exception):
    """A store the stage writes to is unreachable or refuses writes for now (the index table
    on S3 that cannot be reached, commits that keep conflicting): not the record's fault, so
    the consumer loop waits and retries without counting the try or dead-lettering."""
