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


def test_removed_events_become_removals() -> None:
    record = json.loads(json.dumps(AWS_PUT["Records"][0]))
    record["eventName"] = "ObjectRemoved:Delete"
    batch = parse_event({"Records": [record]})
    assert batch.objects == [] and batch.ignored == []
    [removed] = batch.removed
    assert (removed.bucket, removed.key) == ("media", "holiday videos/beach day(1).mp4")
    assert removed.uri == "s3://media/holiday videos/beach day(1).mp4"
    assert removed.version is not None and removed.version.startswith("s:")
    assert removed.object_id is None, "no versionId: every version of the key goes"
    minio = parse_event({"EventName": "s3:ObjectRemoved:DeleteMarkerCreated", "Records": [record]})
    assert minio.removed[0].source == "minio"


def test_removal_of_one_version_names_that_object_version() -> None:
    record = json.loads(json.dumps(AWS_PUT["Records"][0]))
    record["s3"]["object"]["versionId"] = "v1"
    created = parse_event({"Records": [record]}).objects[0]
    record["eventName"] = "ObjectRemoved:Delete"
    [removed] = parse_event({"Records": [record]}).removed
    assert removed.object_id == created.object_id


def test_versions_of_a_key_order_by_sequencer_then_event_time() -> None:
    from schemas.events import version_order

    assert (version_order("0A", None) or "") < (version_order("0B", None) or "")
    assert (version_order("FF", None) or "") < (version_order("100", None) or ""), "left-padded, as S3 says"
    assert version_order(None, None) is None


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


def _s3_record_event(bucket: str = "media", key: str = "a.mp4") -> bytes:
    """An AWS S3 notification as raw JSON, so escapes such as \\ud800 stay as the producer wrote them."""
    return (
        f'{{"Records": [{{"eventName": "ObjectCreated:Put", "s3": {{"bucket": {{"name": "{bucket}"}}, '
        f'"object": {{"key": "{key}", "size": 5, "eTag": "e"}}}}}}]}}'
    ).encode()


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
        # Hostile or careless producers (issue 8): each is the record's fault, never retried.
        (_s3_record_event(key="\\ud800.mp4"), "malformed_record"),  # lone surrogate: no UTF-8, no id
        (b'{"uri": "s3://b/\\udfff"}', "malformed_record"),
        (_s3_record_event(bucket=""), "malformed_record"),
        (_s3_record_event(key=""), "malformed_record"),
        (b'{"uri": "s3://b/k", "size": true}', "malformed_record"),
        (b'{"uri": "s3://b/k", "size": 99999999999999999999999}', "malformed_record"),
        (b'{"uri": "file://otherhost/etc/passwd"}', "unsupported_uri"),
        (b'{"uri": "s3://b/k", "size": 1' + b"0" * 5000 + b"}", "malformed_json"),  # > int digit limit
        (b"[" * 100_000 + b"]" * 100_000, "malformed_json"),  # RecursionError inside json
    ],
)
def test_malformed_events_raise_with_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(EventParseError) as info:
        parse_event(payload)
    assert info.value.reason == reason


def test_local_file_uris_keep_working() -> None:
    assert parse_event(b'{"uri": "file:///tmp/a.mp4"}').objects[0].uri == "file:///tmp/a.mp4"
    assert parse_event(b'{"uri": "file://localhost/tmp/a.mp4"}').objects[0].scheme == "file"


# --- envelopes and the remaining shapes ------------------------------------------------------

S3_JSON = json.dumps(AWS_PUT)


def test_aws_multiple_records_each_become_an_object() -> None:
    second = json.loads(json.dumps(AWS_PUT["Records"][0]))
    second["s3"]["object"].update(key="b.mov", eTag="abc", sequencer="0055AED6DCD90281E6")
    second["eventName"] = "ObjectCreated:CompleteMultipartUpload"
    batch = parse_event({"Records": [AWS_PUT["Records"][0], second]})
    assert [o.key for o in batch.objects] == ["holiday videos/beach day(1).mp4", "b.mov"]
    assert batch.objects[1].event_name == "ObjectCreated:CompleteMultipartUpload"


def test_sqs_via_kafka_connect_body_string() -> None:
    # Kafka Connect SQS source connector value: the SQS message with the S3 JSON in body/Body.
    for field in ("body", "Body"):
        envelope = {"messageId": "5fea7756", "receiptHandle": "AQEB", field: S3_JSON, "attributes": {}}
        [obj] = parse_event(json.dumps(envelope)).objects
        assert obj.uri == "s3://media/holiday videos/beach day(1).mp4" and obj.source == "aws-s3"


def test_sqs_batch_records_wrap_events() -> None:
    sqs = {
        "Records": [
            {"messageId": "1", "receiptHandle": "r1", "body": S3_JSON, "eventSource": "aws:sqs"},
            {
                "messageId": "2",
                "receiptHandle": "r2",
                "body": json.dumps({"Event": "s3:TestEvent"}),
                "eventSource": "aws:sqs",
            },
        ]
    }
    batch = parse_event(sqs)
    assert len(batch.objects) == 1 and batch.ignored == ["s3:TestEvent"]


SNS = {
    "Type": "Notification",
    "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
    "TopicArn": "arn:aws:sns:us-east-1:123456789012:media-events",
    "Subject": "Amazon S3 Notification",
    "Message": S3_JSON,
    "Timestamp": "2026-11-26T10:00:01.000Z",
    "SignatureVersion": "1",
}


def test_sns_envelope_and_sns_inside_sqs() -> None:
    [obj] = parse_event(SNS).objects
    assert obj.key == "holiday videos/beach day(1).mp4"
    # S3 -> SNS -> SQS -> Kafka Connect: three envelopes.
    [nested] = parse_event({"MessageId": "m", "Body": json.dumps(SNS)}).objects
    assert nested.object_id == obj.object_id
    lambda_sns = {"Records": [{"EventSource": "aws:sns", "Sns": {"Type": "Notification", "Message": S3_JSON}}]}
    assert parse_event(lambda_sns).objects[0].object_id == obj.object_id


def test_sns_subscription_confirmation_is_ignored() -> None:
    batch = parse_event({"Type": "SubscriptionConfirmation", "Message": "You have chosen to subscribe", "Token": "t"})
    assert batch.objects == [] and batch.ignored == ["sns:SubscriptionConfirmation"]


def test_kafka_connect_json_converter_payload() -> None:
    [obj] = parse_event({"schema": {"type": "string"}, "payload": S3_JSON}).objects
    assert obj.bucket == "media"


def test_minio_retention_and_legal_hold_are_ignored() -> None:
    records = []
    for name in ("s3:ObjectCreated:PutRetention", "s3:ObjectCreated:PutLegalHold", "s3:ObjectAccessed:Get"):
        rec = json.loads(json.dumps(AWS_PUT["Records"][0]))
        rec["eventName"] = name
        records.append(rec)
    batch = parse_event({"EventName": "s3:ObjectCreated:PutRetention", "Key": "media/x", "Records": records})
    assert batch.objects == [] and len(batch.ignored) == 3


def test_eventbridge_other_detail_types_are_ignored() -> None:
    batch = parse_event({"detail-type": "Object Restore Completed", "source": "aws.s3", "detail": {}})
    assert batch.objects == [] and batch.ignored == ["Object Restore Completed"]


def test_eventbridge_object_deleted_is_a_removal() -> None:
    batch = parse_event(
        {
            "detail-type": "Object Deleted",
            "source": "aws.s3",
            "time": "2026-11-26T10:00:00Z",
            "detail": {
                "bucket": {"name": "media"},
                "object": {"key": "a+b.mp4", "sequencer": "0A"},
                "deletion-type": "Delete Marker Created",
            },
        }
    )
    [removed] = batch.removed
    assert removed.key == "a b.mp4" and removed.event_name == "ObjectRemoved:DeleteMarkerCreated"
    with pytest.raises(EventParseError):
        parse_event({"detail-type": "Object Deleted", "detail": {}})


def test_bridge_notification_round_trips_as_seaweedfs_source() -> None:
    from datetime import UTC, datetime

    from schemas.events import (
        SEAWEEDFS_EVENT_SOURCE,
        S3BucketRef,
        S3Entity,
        S3EventNotification,
        S3EventRecord,
        S3ObjectRef,
    )

    note = S3EventNotification(
        Records=[
            S3EventRecord(
                event_source=SEAWEEDFS_EVENT_SOURCE,
                event_time=datetime(2026, 11, 26, tzinfo=UTC),
                s3=S3Entity(
                    bucket=S3BucketRef(name="media", arn="arn:aws:s3:::media"),
                    object=S3ObjectRef(key="a+b.mp4", size=3, e_tag="e", sequencer="0A", content_type="video/mp4"),
                ),
            )
        ]
    )
    wire = json.loads(note.to_bytes())
    assert wire["Records"][0]["s3"]["object"] == {
        "key": "a+b.mp4",
        "size": 3,
        "eTag": "e",
        "sequencer": "0A",
        "contentType": "video/mp4",
    }
    [obj] = parse_event(note.to_bytes()).objects
    assert (obj.key, obj.source, obj.content_type) == ("a b.mp4", "seaweedfs", "video/mp4")


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"Type": "Notification", "Message": "not json"}', "malformed_json"),
        (b'{"body": "[1]"}', "unknown_event_shape"),
        (b'{"Records": [{"eventSource": "aws:sqs", "receiptHandle": "r", "body": 5}]}', "malformed_record"),
    ],
)
def test_malformed_envelopes_raise_with_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(EventParseError) as info:
        parse_event(payload)
    assert info.value.reason == reason


def _in_sqs_bodies(event: str, depth: int) -> str:
    for _ in range(depth):
        event = json.dumps({"body": event})
    return event


def test_envelope_depth_limit_refuses_a_valid_event_nested_too_deep() -> None:
    # The innermost event is a valid S3 notification, so only the depth limit can refuse it.
    [obj] = parse_event(_in_sqs_bodies(S3_JSON, 4)).objects  # S3 -> SNS -> SQS -> Connect and one more
    assert obj.key == "holiday videos/beach day(1).mp4"
    with pytest.raises(EventParseError, match="nested envelopes") as info:
        parse_event(_in_sqs_bodies(S3_JSON, 5))
    assert info.value.reason == "unknown_event_shape"
