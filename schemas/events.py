"""Object-created events: the normalised model and parsers for every shape producers send.

Shapes: AWS S3 notifications (``Records[]``), MinIO's Kafka target (same records wrapped in
``EventName``/``Key`` with ``s3:``-prefixed names), EventBridge "Object Created", and the
native ``{"uri": ...}`` event for any other Kafka producer. Transport envelopes around any of
them are unwrapped: SNS (``Message`` string), SQS via Kafka Connect (``body``/``Body`` string),
SQS/SNS batches (``Records[]`` of ``aws:sqs``/``aws:sns``) and Kafka Connect's JsonConverter
(``{"schema", "payload"}``). ``S3EventNotification`` is the AWS shape capstream itself
publishes (the SeaweedFS event bridge).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import unquote_plus, urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from schemas.base import Message
from schemas.ids import object_version_id

SCHEMA_VERSION: Literal[1] = 1

# ObjectCreated sub-events that create content. MinIO also emits ObjectCreated:PutTagging,
# :PutRetention and :PutLegalHold, which change metadata only and must not start a run.
CONTENT_CREATING = frozenset({"Put", "Post", "Copy", "CompleteMultipartUpload"})

EventSource = Literal["aws-s3", "minio", "seaweedfs", "eventbridge", "native"]

# Envelopes nest (S3 -> SNS -> SQS -> Kafka Connect is three); deeper is not a real producer.
_MAX_ENVELOPE_DEPTH = 4


class EventParseError(ValueError):
    """The payload is not an event we understand; ``reason`` is a stable code for the DLQ."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class ObjectCreated(Message):
    """One object version that should be captioned. ``object_id`` is per version."""

    schema_version: Literal[1] = SCHEMA_VERSION
    uri: str = Field(min_length=1, description="s3://bucket/key (key not URL-encoded), file:///path or http(s) URL")
    bucket: str | None = Field(default=None, min_length=1)
    key: str | None = Field(default=None, min_length=1)
    # strict: JSON `true` is not a size; the bound keeps it a Kafka/Redis-friendly int64.
    size: int | None = Field(default=None, ge=0, le=2**63 - 1, strict=True)
    etag: str | None = None
    version_id: str | None = None
    sequencer: str | None = None
    content_type: str | None = None
    event_name: str = "ObjectCreated:Put"
    event_time: datetime | None = None
    source: EventSource = "native"

    @field_validator("uri", "bucket", "key", "etag", "version_id", "sequencer", "content_type", "event_name")
    @classmethod
    def _encodable(cls, value: str | None) -> str | None:
        # JSON may escape a lone surrogate ("\ud800"); such text has no UTF-8 form, so no id,
        # key or log line could be made from it.
        if value is not None and not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("contains a lone surrogate (not valid Unicode text)") from None
        return value

    @model_validator(mode="after")
    def _file_uri_is_local(self) -> ObjectCreated:
        parts = urlsplit(self.uri)
        if parts.scheme == "file" and parts.netloc not in ("", "localhost"):
            raise ValueError(f"file:// URI names host {parts.netloc!r}; only local files can be read")
        return self

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

    @property
    def version_order(self) -> str | None:
        """Orders events of this key (S3's rule for sequencers: left-pad, then compare)."""
        return version_order(self.sequencer, self.event_time)


def version_order(sequencer: str | None, event_time: datetime | None) -> str | None:
    if sequencer:
        return "s:" + sequencer.upper().rjust(32, "0")
    if event_time is not None:
        return "t:" + event_time.astimezone(UTC).isoformat()
    return None


class ObjectRemoved(Message):
    """An object (or one version of it) was deleted: its segments leave the search index.

    With ``version_id`` (S3 ``ObjectRemoved:Delete`` of one version) only that version's rows
    go; otherwise (unversioned delete, delete marker) every version of the key up to
    ``version`` goes.
    """

    schema_version: Literal[1] = SCHEMA_VERSION
    uri: str = Field(min_length=1)
    bucket: str = Field(min_length=1)
    key: str = Field(min_length=1)
    version_id: str | None = None
    sequencer: str | None = None
    event_name: str = "ObjectRemoved:Delete"
    event_time: datetime | None = None
    source: EventSource = "native"

    @field_validator("uri", "bucket", "key", "version_id", "sequencer", "event_name")
    @classmethod
    def _encodable(cls, value: str | None) -> str | None:
        return ObjectCreated._encodable(value)

    @property
    def version(self) -> str | None:
        return version_order(self.sequencer, self.event_time)

    @property
    def object_id(self) -> str | None:
        """The removed version's object id, when one version was named."""
        if self.version_id and self.version_id != "null" and self.event_name.endswith(":Delete"):
            return object_version_id(self.uri, f"v:{self.version_id}")
        return None


class EventBatch(BaseModel):
    """Result of parsing one Kafka record: objects to process and what was ignored (and why)."""

    model_config = ConfigDict(frozen=True)

    objects: list[ObjectCreated]
    removed: list[ObjectRemoved] = []
    ignored: list[str] = []


def parse_event(payload: bytes | str | dict[str, Any]) -> EventBatch:
    """Normalise any supported event shape. Raises EventParseError for anything else."""
    try:
        return _parse_doc(_load(payload), depth=0)
    except EventParseError:
        raise
    except (RecursionError, ValueError, TypeError, KeyError, AttributeError) as exc:
        # A shape no branch foresaw is still this record's fault, never a reason to retry.
        raise EventParseError("malformed_record", f"cannot read event: {type(exc).__name__}: {exc}") from exc


def _parse_doc(doc: dict[str, Any], depth: int) -> EventBatch:
    if depth > _MAX_ENVELOPE_DEPTH:
        raise EventParseError("unknown_event_shape", f"more than {_MAX_ENVELOPE_DEPTH} nested envelopes")
    if doc.get("Event") == "s3:TestEvent" or doc.get("Event") == "TestEvent":
        return EventBatch(objects=[], ignored=["s3:TestEvent"])
    if "Records" in doc:
        source: EventSource = "minio" if "EventName" in doc else "aws-s3"
        return _parse_records(doc["Records"], source, depth)
    if doc.get("detail-type") == "Object Created" or "detail" in doc:
        return _parse_eventbridge(doc)
    if "uri" in doc:
        return _parse_native(doc)
    if "Type" in doc and "Message" in doc:
        return _parse_sns(doc, depth)
    body = doc.get("body", doc.get("Body"))
    if isinstance(body, str):
        # Kafka Connect SQS source connectors put the SQS message (the S3 JSON) in body/Body.
        return _parse_doc(_load_inner(body, "SQS body"), depth + 1)
    if "payload" in doc and "schema" in doc:
        # Kafka Connect JsonConverter with schemas.enable=true wraps the value.
        inner = doc["payload"]
        return _parse_doc(_load_inner(inner, "Kafka Connect payload"), depth + 1)
    raise EventParseError("unknown_event_shape", f"unrecognised event with keys {sorted(doc)[:8]}")


def _parse_sns(doc: dict[str, Any], depth: int) -> EventBatch:
    kind = str(doc.get("Type"))
    if kind != "Notification":
        # SubscriptionConfirmation / UnsubscribeConfirmation carry no object.
        return EventBatch(objects=[], ignored=[f"sns:{kind}"])
    return _parse_doc(_load_inner(doc["Message"], "SNS Message"), depth + 1)


def _load_inner(value: Any, what: str) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    if not isinstance(value, str):
        raise EventParseError("malformed_record", f"{what} must be a JSON string or object")
    try:
        return _load(value)
    except EventParseError as exc:
        raise EventParseError(exc.reason, f"{what}: {exc}") from exc


def _merge(batches: list[EventBatch]) -> EventBatch:
    return EventBatch(
        objects=[o for b in batches for o in b.objects],
        removed=[r for b in batches for r in b.removed],
        ignored=[i for b in batches for i in b.ignored],
    )


def _load(payload: bytes | str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(payload, dict):
        return payload
    try:
        doc = json.loads(payload)
    except RecursionError:
        raise EventParseError("malformed_json", "event nests JSON too deeply to parse") from None
    except ValueError as exc:  # JSONDecodeError, bad UTF-8, an integer of more than 4300 digits
        raise EventParseError("malformed_json", f"event is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise EventParseError("unknown_event_shape", f"event must be a JSON object, got {type(doc).__name__}")
    return doc


def _created_subtype(event_name: str) -> str | None:
    """'s3:ObjectCreated:Put' / 'ObjectCreated:Put' -> 'Put'; None for other families."""
    name = event_name.removeprefix("s3:")
    family, _, sub = name.partition(":")
    return sub if family == "ObjectCreated" else None


def _parse_records(records: Any, source: EventSource, depth: int) -> EventBatch:
    if not isinstance(records, list):
        raise EventParseError("unknown_event_shape", "'Records' must be a list")
    objects: list[ObjectCreated] = []
    removed: list[ObjectRemoved] = []
    ignored: list[str] = []
    nested: list[EventBatch] = []
    for i, rec in enumerate(records):
        if isinstance(rec, dict) and (inner := _record_envelope(rec, i)) is not None:
            # An SQS or SNS batch (Lambda / EventBridge Pipes shape): each record wraps an event.
            nested.append(_parse_doc(inner, depth + 1))
            continue
        try:
            name = str(rec["eventName"])
            sub = _created_subtype(name)
            removal = name.removeprefix("s3:").startswith("ObjectRemoved:")
            if sub not in CONTENT_CREATING and not removal:
                ignored.append(name)
                continue
            s3 = rec["s3"]
            bucket = str(s3["bucket"]["name"])
            obj = s3["object"]
            # S3 and MinIO URL-form-encode keys in notifications ('+' is a space).
            key = unquote_plus(str(obj["key"]))
            record_source = "seaweedfs" if rec.get("eventSource") == SEAWEEDFS_EVENT_SOURCE else source
            if removal:
                removed.append(
                    ObjectRemoved(
                        uri=f"s3://{bucket}/{key}",
                        bucket=bucket,
                        key=key,
                        version_id=obj.get("versionId"),
                        sequencer=obj.get("sequencer"),
                        event_name=name.removeprefix("s3:"),
                        event_time=rec.get("eventTime"),
                        source=record_source,
                    )
                )
                continue
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
                    source=record_source,
                )
            )
        except (KeyError, TypeError) as exc:
            raise EventParseError("malformed_record", f"Records[{i}] lacks field {exc}") from exc
        except ValidationError as exc:
            raise EventParseError("malformed_record", f"Records[{i}]: {_first_error(exc)}") from exc
    return _merge([EventBatch(objects=objects, removed=removed, ignored=ignored), *nested])


def _record_envelope(rec: dict[str, Any], i: int) -> dict[str, Any] | None:
    """The event inside an ``aws:sqs`` or ``aws:sns`` batch record; None for an S3 record."""
    if rec.get("eventSource") == "aws:sqs" or ("body" in rec and "receiptHandle" in rec):
        return _load_inner(rec.get("body"), f"Records[{i}].body")
    if rec.get("EventSource") == "aws:sns" or "Sns" in rec:
        sns = rec.get("Sns")
        if not isinstance(sns, dict):
            raise EventParseError("malformed_record", f"Records[{i}].Sns must be an object")
        return {"Type": sns.get("Type", "Notification"), "Message": sns.get("Message")}
    return None


def _parse_eventbridge(doc: dict[str, Any]) -> EventBatch:
    kind = doc.get("detail-type")
    if kind not in ("Object Created", "Object Deleted"):
        return EventBatch(objects=[], ignored=[str(doc.get("detail-type", "eventbridge:unknown"))])
    try:
        detail = doc["detail"]
        bucket = str(detail["bucket"]["name"])
        obj = detail["object"]
        # EventBridge delivers keys URL-encoded like S3 notifications do.
        key = unquote_plus(str(obj["key"]))
        common: dict[str, Any] = {
            "uri": f"s3://{bucket}/{key}",
            "bucket": bucket,
            "key": key,
            "version_id": obj.get("version-id"),
            "sequencer": obj.get("sequencer"),
            "event_time": doc.get("time"),
            "source": "eventbridge",
        }
        if kind == "Object Deleted":
            marker = detail.get("deletion-type") == "Delete Marker Created"
            name = "ObjectRemoved:DeleteMarkerCreated" if marker else "ObjectRemoved:Delete"
            return EventBatch(objects=[], removed=[ObjectRemoved(**common, event_name=name)])
        reason = str(detail.get("reason", "PutObject")).removesuffix("Object")
        created = ObjectCreated(
            **common,
            size=obj.get("size"),
            etag=_strip_quotes(obj.get("etag")),
            event_name="ObjectCreated:" + reason,
        )
        return EventBatch(objects=[created])
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
    elif parts.scheme == "file" and parts.netloc not in ("", "localhost"):
        raise EventParseError("unsupported_uri", f"file URI names a host ({parts.netloc!r}); only local files")
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


# --------------------------------------------------------------------------------------------
# The AWS S3 notification shape, as capstream publishes it (SeaweedFS event bridge).

SEAWEEDFS_EVENT_SOURCE = "seaweedfs:s3"


class _AwsShape(BaseModel):
    """camelCase on the wire, as AWS spells it."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", alias_generator=to_camel, populate_by_name=True, serialize_by_alias=True
    )


class S3BucketRef(_AwsShape):
    name: str
    arn: str


class S3ObjectRef(_AwsShape):
    key: str = Field(description="URL-form-encoded, as S3 sends it")
    size: int | None = Field(default=None, ge=0, description="absent on ObjectRemoved events")
    e_tag: str | None = None
    version_id: str | None = None
    sequencer: str | None = None
    content_type: str | None = Field(default=None, description="MinIO-style extension; AWS omits it")


class S3Entity(_AwsShape):
    s3_schema_version: str = "1.0"
    configuration_id: str = "capstream"
    bucket: S3BucketRef
    object: S3ObjectRef


class S3EventRecord(_AwsShape):
    event_version: str = "2.1"
    event_source: str = "aws:s3"
    aws_region: str = "us-east-1"
    event_time: datetime
    event_name: str = "ObjectCreated:Put"
    s3: S3Entity


class S3EventNotification(Message):
    """``{"Records": [...]}`` exactly as AWS S3 delivers it; ``parse_event`` reads it back."""

    model_config = ConfigDict(serialize_by_alias=True)

    records: list[S3EventRecord] = Field(alias="Records")

    def to_bytes(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()
