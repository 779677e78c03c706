"""Webhooks: signed notifications when an object becomes done or failed.

The outcome is appended to a Redis stream (the outbox) by the same Lua script that makes the
transition (``workers.state.progress``); the webhooks stage relays the stream onto
``media.outcomes`` (``relay``) and POSTs each outcome to the webhooks that want it
(``stage``), signed (``signing``), to vetted addresses only, retried with backoff and
dead-lettered after the last try. It is a stage of its own, so a receiver that hangs holds
webhook slots, never the pipeline.
"""
