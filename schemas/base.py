"""Common base for every message on the wire."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict


def utc_now() -> datetime:
    return datetime.now(UTC)


class Message(BaseModel):
    """Frozen, strict about unknown fields, bytes as base64 in JSON."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        ser_json_bytes="base64",
        val_json_bytes="base64",
    )

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()
