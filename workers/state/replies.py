"""Redis replies as Python text: clients made with or without ``decode_responses`` both work."""

from __future__ import annotations


def reply_text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
