"""How an object ended, on ``media.outcomes``, and the webhook body that tells a subscriber.

An outcome is written once per transition (to ``done``, to ``failed``) by the Lua script that
makes the transition, into a Redis stream (an outbox), and moved onto the topic by the
webhooks stage: the transition and its outcome cannot be separated by a crash.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from schemas.base import Message

WebhookEvent = Literal["object.done", "object.failed"]
WEBHOOK_EVENTS: tuple[WebhookEvent, ...] = ("object.done", "object.failed")


class ObjectOutcome(Message):
    schema_version: Literal[1] = 1
    outcome_id: str = Field(description="unique per transition (the outbox entry); a webhook delivery's dedup key")
    event: WebhookEvent
    object_id: str
    source_uri: str = ""
    error: str | None = Field(default=None, description="why it failed (object.failed)")
    segments_total: int | None = None
    at: datetime = Field(description="when the object reached the state")


class WebhookObject(Message):
    object_id: str
    source_uri: str = Field(description="without query string or user info")
    collection: str
    state: Literal["done", "failed"]
    error: str | None = None
    segments_total: int | None = None
    finished_at: datetime


class WebhookPayload(Message):
    """The JSON body POSTed to a webhook, signed in ``Capstream-Signature``."""

    id: str = Field(description="the delivery's id: the same on every retry of it (receivers dedupe on it)")
    type: WebhookEvent
    created_at: datetime
    data: WebhookObject
