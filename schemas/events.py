"""Object-created events: the normalised model and parsers for every shape producers send.

Shapes: AWS S3 notifications (``Records[]``), MinIO's Kafka target (same records wrapped in
``EventName``/``Key`` with ``s3:``-prefixed names), EventBridge "Object Created", and the
native ``{"uri": ...}`` event for any other Kafka producer.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal
from urllib.parse import unquote_plus, urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schemas.base import Message
from schemas.ids import object_version_id

SCHEMA_VERSION: Literal[1] = 1

# ObjectCreated sub-events that create content. MinIO also emits ObjectCreated:PutTagging,
# :PutRetention and :PutLegalHold, which change metadata only and must not start a run.
CONTENT_CREATING = frozenset({"Put", "Post", "Copy", "CompleteMultipartUpload"})

EventSource = Literal["aws-s3", "minio", "eventbridge", "native"]


class EventParseError(ValueError):
    """The payload is not an event we understand; ``reason`` is a stable code for the DLQ."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class ObjectCreated(Message):
    """One object version that should be captioned. ``object_id`` is per version."""

    schema_version: Literal[1] = SCHEMA_VERSION
    uri: str = Field(description="s3://bucket/key (key not URL-encoded), file:///path or http(s) URL")
    bucket: str | None = None
    key: str | None = None
    size: int | None = Field(default=None, ge=0)
    etag: str | None = None
    version_id: str | None = None
    sequencer: str | None = None
    content_type: str | None = None
    event_name: str = "ObjectCreated:Put"
    event_time: datetime | None = None
    source: EventSource = "native"

    @property
    def object_id(self) -> str:
        return object_version_id(self.uri, self.version_token)

    @property
    def version_token(self) -> str | None:
        """What tells two versions of a key apart: versionId, else eTag+size+sequencer."""
        if self.version_id and self.version_id != "null":
            return f"v:{self.version_id}"
        parts = [p for p in (self.etag, str(self.size) if self.size is not None else None, self.sequencer) if p]
        return "e:" + ":".join(parts) if parts else None

    @property
    def scheme(self) -> str:
        return urlsplit(self.uri).scheme


class EventBatch(BaseModel):
    """Result of parsing one Kafka record: objects to process and what was ignored (and why)."""

    model_config = ConfigDict(frozen=True)

    objects: list[ObjectCreated]
    ignored: list[str] = []


def parse_event(payload: bytes | str | dict[str, Any]) -> EventBatch:
    """Normalise any supported event shape. Raises EventParseError for anything else."""
    doc = _load(payload)
    if doc.get("Event") == "s3:TestEvent" or doc.get("Event") == "TestEvent":
        return EventBatch(objects=[], ignored=["s3:TestEvent"])
    if "Records" in doc:
        source: EventSource = "minio" if "EventName" in doc else "aws-s3"
        return _parse_records(doc["Records"], source)
    if doc.get("detail-type") == "Object Created" or "detail" in doc:
        return _parse_eventbridge(doc)
    if "uri" in doc:
        return _parse_native(doc)
    raise EventParseError("unknown_event_shape", f"unrecognised event with keys {sorted(doc)[:8]}")


def _load(payload: bytes | str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(payload, dict):
        return payload
    try:
        doc = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EventParseError("malformed_json", f"event is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise EventParseError("unknown_event_shape", f"event must be a JSON object, got {type(doc).__name__}")
    return doc


def _created_subtype(event_name: str) -> str | None:
    """'s3:ObjectCreated:Put' / 'ObjectCreated:Put' -> 'Put'; None for other families."""
    name = event_name.removeprefix("s3:")
    family, _, sub = name.partition(":")
    return sub if family == "ObjectCreated" else None


def _parse_records(records: Any, source: EventSource) -> EventBatch:
    if not isinstance(records, list):
        raise EventParseError("unknown_event_shape", "'Records' must be a list")
    objects: list[ObjectCreated] = []
    ignored: list[str] = []
    for i, rec in enumerate(records):
        try:
            name = str(rec["eventName"])
            sub = _created_subtype(name)
            if sub not in CONTENT_CREATING:
                ignored.append(name)
                continue
            s3 = rec["s3"]
            bucket = str(s3["bucket"]["name"])
            obj = s3["object"]
            # S3 and MinIO URL-form-encode keys in notifications ('+' is a space).
            key = unquote_plus(str(obj["key"]))
            objects.append(
                ObjectCreated(
                    uri=f"s3://{bucket}/{key}",
                    bucket=bucket,
                    key=key,
                    size=obj.get("size"),
                    etag=_strip_quotes(obj.get("eTag") or obj.get("etag")),
                    version_id=obj.get("versionId"),
                    sequencer=obj.get("sequencer"),
                    content_type=obj.get("contentType"),
                    event_name=name.removeprefix("s3:"),
                    event_time=rec.get("eventTime"),
                    source=source,
                )
            )
        except (KeyError, TypeError) as exc:
            raise EventParseError("malformed_record", f"Records[{i}] lacks field {exc}") from exc
        except ValidationError as exc:
            raise EventParseError("malformed_record", f"Records[{i}]: {_first_error(exc)}") from exc
    return EventBatch(objects=objects, ignored=ignored)


def _parse_eventbridge(doc: dict[str, Any]) -> EventBatch:
    if doc.get("detail-type") != "Object Created":
        return EventBatch(objects=[], ignored=[str(doc.get("detail-type", "eventbridge:unknown"))])
    try:
        detail = doc["detail"]
        bucket = str(detail["bucket"]["name"])
        obj = detail["object"]
        # EventBridge delivers keys URL-encoded like S3 notifications do.
        key = unquote_plus(str(obj["key"]))
        return EventBatch(
            objects=[
                ObjectCreated(
                    uri=f"s3://{bucket}/{key}",
                    bucket=bucket,
                    key=key,
                    size=obj.get("size"),
                    etag=_strip_quotes(obj.get("etag")),
                    version_id=obj.get("version-id"),
                    sequencer=obj.get("sequencer"),
                    event_name="ObjectCreated:" + str(detail.get("reason", "PutObject")).removesuffix("Object"),
                    event_time=doc.get("time"),
                    source="eventbridge",
                )
            ]
        )
    except (KeyError, TypeError) as exc:
        raise EventParseError("malformed_record", f"EventBridge event lacks field {exc}") from exc
    except ValidationError as exc:
        raise EventParseError("malformed_record", f"EventBridge event: {_first_error(exc)}") from exc


def _parse_native(doc: dict[str, Any]) -> EventBatch:
    uri = doc.get("uri")
    if not isinstance(uri, str) or not uri:
        raise EventParseError("malformed_record", "native event needs a non-empty string 'uri'")
    parts = urlsplit(uri)
    if parts.scheme not in ("s3", "file", "http", "https"):
        raise EventParseError("unsupported_uri", f"unsupported URI scheme {parts.scheme!r} in {uri!r}")
    bucket = key = None
    if parts.scheme == "s3":
        bucket, key = parts.netloc, parts.path.lstrip("/")
        if not bucket or not key:
            raise EventParseError("unsupported_uri", f"s3 URI needs bucket and key: {uri!r}")
    known = {"uri", "size", "etag", "version_id", "sequencer", "content_type", "event_time", "schema_version"}
    try:
        return EventBatch(
            objects=[
                ObjectCreated(
                    bucket=bucket,
                    key=key,
                    source="native",
                    **{k: v for k, v in doc.items() if k in known and k != "schema_version"},
                )
            ]
        )
    except ValidationError as exc:
        raise EventParseError("malformed_record", f"native event: {_first_error(exc)}") from exc


def _strip_quotes(etag: Any) -> str | None:
    return str(etag).strip('"') if etag else None


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    return f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
