"""A typed Python client of the ``capstream serve`` HTTP API (httpx + pydantic).

It imports nothing of the server (no ``workers.search``, LanceDB, vLLM or torch), so a program
that only queries a server needs httpx and pydantic alone. ``schema_check.schema_drift`` keeps
its models in step with the server's OpenAPI document.
"""

from workers.client.client import AsyncCapstreamClient, CapstreamClient
from workers.client.errors import (
    AskFailed,
    CapstreamError,
    CursorExpired,
    InvalidRequest,
    NoResponse,
    NotFound,
    RateLimited,
    Unauthorized,
)
from workers.client.models import (
    Answer,
    AnswerMoment,
    AnswerTimings,
    Chapter,
    Health,
    Hit,
    IndexedSegment,
    MomentText,
    ObjectHit,
    ObjectInfo,
    ObjectPage,
    SearchPage,
    Summary,
)
from workers.client.schema_check import schema_drift

__all__ = [
    "Answer",
    "AnswerMoment",
    "AnswerTimings",
    "AskFailed",
    "AsyncCapstreamClient",
    "CapstreamClient",
    "CapstreamError",
    "Chapter",
    "CursorExpired",
    "Health",
    "Hit",
    "IndexedSegment",
    "InvalidRequest",
    "MomentText",
    "NoResponse",
    "NotFound",
    "ObjectHit",
    "ObjectInfo",
    "ObjectPage",
    "RateLimited",
    "SearchPage",
    "Summary",
    "Unauthorized",
    "schema_drift",
]
