"""Event parsers: every shape producers send, normalised to ObjectCreated."""

from __future__ import annotations

import json

import pytest

from schemas.events import EventParseError, parse_event
from schemas.ids import object_version_id, segment_id

AWS_PUT = {
    "Records": [
        {
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "awsRegion": "us-east-1",
            "eventTime": "2026-11-26T10:00:00.000Z",
            "eventName": "ObjectCreated:Put",
            "s3": {
                "s3SchemaVersion": "1.0",
                "bucket": {"name": "media", "arn": "arn:aws:s3:::media"},
                "object": {
                    "key": "holiday+videos/beach+day%281%29.mp4",
                    "size": 1024,
                    "eTag": "d41d8cd98f00b204e9800998ecf8427e",
                    "sequencer": "0055AED6DCD90281E5",
                },
            },
        }
    ]
}


def test_aws_put_decodes_url_form_key() -> None:
    batch = parse_event(json.dumps(AWS_PUT).encode())
    [obj] = batch.objects
    assert obj.bucket == "media"
    assert obj.key == "holiday videos/beach day(1).mp4"
    assert obj.uri == "s3://media/holiday videos/beach day(1).mp4"
    assert obj.size == 1024 and obj.source == "aws-s3" and obj.event_name == "ObjectCreated:Put"


def test_object_id_is_deterministic_and_version_sensitive() -> None:
    a = parse_event(AWS_PUT).objects[0]
    b = parse_event(json.loads(json.dumps(AWS_PUT))).objects[0]
    assert a.object_id == b.object_id
    changed = json.loads(json.dumps(AWS_PUT))
    changed["Records"][0]["s3"]["object"]["eTag"] = "ffff"
    assert parse_event(changed).objects[0].object_id != a.object_id
    versioned = json.loads(json.dumps(AWS_PUT))
    versioned["Records"][0]["s3"]["object"]["versionId"] = "v1"
    obj = parse_event(versioned).objects[0]
    assert obj.object_id == object_version_id(obj.uri, "v:v1")
    assert segment_id(obj.object_id, 0) == segment_id(obj.object_id, 0) != segment_id(obj.object_id, 1)


def test_s3_test_event_is_ignored() -> None:
    batch = parse_event(
        {
            "Service": "Amazon S3",
            "Event": "s3:TestEvent",
            "Time": "2026-11-26T10:00:00Z",
            "Bucket": "media",
            "RequestId": "X",
            "HostId": "Y",
        }
    )
    assert batch.objects == [] and batch.ignored == ["s3:TestEvent"]


def test_minio_envelope_and_metadata_only_events() -> None:
    record = json.loads(json.dumps(AWS_PUT["Records"][0]))
    record["eventName"] = "s3:ObjectCreated:Put"
    record["eventSource"] = "minio:s3"
    tagging = json.loads(json.dumps(record))
    tagging["eventName"] = "s3:ObjectCreated:PutTagging"
    batch = parse_event({"EventName": "s3:ObjectCreated:Put", "Key": "media/x.mp4", "Records": [record, tagging]})
    assert [o.source for o in batch.objects] == ["minio"]
    assert batch.objects[0].event_name == "ObjectCreated:Put"
    assert batch.ignored == ["s3:ObjectCreated:PutTagging"]


def test_removed_events_are_ignored() -> None:
    record = json.loads(json.dumps(AWS_PUT["Records"][0]))
    record["eventName"] = "ObjectRemoved:Delete"
    assert parse_event({"Records": [record]}).objects == []


def test_eventbridge_object_created() -> None:
    batch = parse_event(
        {
            "version": "0",
            "id": "1",
            "detail-type": "Object Created",
            "source": "aws.s3",
            "time": "2026-11-26T10:00:00Z",
            "region": "us-east-1",
            "detail": {
                "version": "0",
                "bucket": {"name": "media"},
                "object": {"key": "clips/a.mp4", "size": 5, "etag": "abc", "version-id": "v9", "sequencer": "00617"},
                "reason": "PutObject",
            },
        }
    )
    [obj] = batch.objects
    assert (obj.bucket, obj.key, obj.version_id, obj.source) == ("media", "clips/a.mp4", "v9", "eventbridge")


def test_native_event() -> None:
    [obj] = parse_event(b'{"uri": "s3://media/dir/a b.png", "size": 10}').objects
    assert (obj.bucket, obj.key, obj.source) == ("media", "dir/a b.png", "native")
    [local] = parse_event({"uri": "file:///tmp/x.mp4"}).objects
    assert local.bucket is None and local.scheme == "file"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json", "malformed_json"),
        (b"[1, 2]", "unknown_event_shape"),
        (b'{"hello": "world"}', "unknown_event_shape"),
        (b'{"Records": [{"eventName": "ObjectCreated:Put"}]}', "malformed_record"),
        (b'{"Records": "nope"}', "unknown_event_shape"),
        (b'{"uri": "ftp://host/x.mp4"}', "unsupported_uri"),
        (b'{"uri": "s3://bucket-only"}', "unsupported_uri"),
        (b'{"uri": "s3://b/k", "size": -1}', "malformed_record"),
    ],
)
def test_malformed_events_raise_with_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(EventParseError) as info:
        parse_event(payload)
    assert info.value.reason == reason
