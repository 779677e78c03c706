"""Every Redis key capstream uses, in one place."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RedisKeys:
    prefix: str = "capstream"

    def claim(self, object_id: str) -> str:
        """SET NX: the first event for an object version wins; value = owning record."""
        return f"{self.prefix}:claim:{object_id}"

    def sequencer(self, bucket: str, key: str) -> str:
        """Highest S3 ``sequencer`` accepted for a key: older events for it are stale."""
        return f"{self.prefix}:seq:{bucket}/{key}"

    def event_counts(self, stage: str) -> str:
        """Hash outcome -> count of the events a stage accepted, ignored, filtered or skipped."""
        return f"{self.prefix}:events:{stage}"

    def done(self, stage: str, segment_id: str) -> str:
        """Per-stage idempotency marker for one segment."""
        return f"{self.prefix}:done:{stage}:{segment_id}"

    def progress(self, object_id: str) -> str:
        return f"{self.prefix}:progress:{object_id}"

    def objects(self) -> str:
        """Sorted set of object ids by first-seen time, for listings."""
        return f"{self.prefix}:objects"

    def results(self, object_id: str) -> str:
        """Hash segment_id -> embedding JSON: a view rebuildable from the embeddings topic."""
        return f"{self.prefix}:results:{object_id}"

    def progress_channel(self) -> str:
        return f"{self.prefix}:progress-events"

    def outcomes(self) -> str:
        """Stream (outbox) of objects that became done or failed, appended by the progress
        scripts in the same step; the webhooks stage moves it onto the outcomes topic."""
        return f"{self.prefix}:outcomes"

    def webhook(self, webhook_id: str) -> str:
        """Hash of one webhook: URL, collections, events, signing secret, created time."""
        return f"{self.prefix}:webhook:{webhook_id}"

    def webhooks(self) -> str:
        """Set of the ids of every webhook that is registered."""
        return f"{self.prefix}:webhooks"

    def webhook_delivered(self, webhook_id: str, outcome_id: str) -> str:
        """Set once a webhook acknowledged an outcome (2xx): a redelivered outcome is not re-sent."""
        return f"{self.prefix}:whdone:{webhook_id}:{outcome_id}"

    def api_key(self, key_id: str) -> str:
        """Hash of one API key: name, collections, scrypt salt and hash, created/revoked times."""
        return f"{self.prefix}:apikey:{key_id}"

    def api_keys(self) -> str:
        """Set of every API key id ever created (revoked ones stay, marked), for listings."""
        return f"{self.prefix}:apikeys"

    def rate(self, key_id: str, window: int) -> str:
        """Requests of one API key in one rate-limit window (expires with the window)."""
        return f"{self.prefix}:rate:{key_id}:{window}"

    def search_cursor(self, cursor_id: str) -> str:
        """JSON of one page cursor of ``/search``: its key, query, table version, ids shown."""
        return f"{self.prefix}:cursor:{cursor_id}"
