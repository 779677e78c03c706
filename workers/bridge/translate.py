"""One filer change event -> the S3 notification AWS would have sent (ObjectCreated, or
ObjectRemoved:Delete for a deleted file), or the reason it is neither (folders, multipart parts,
metadata changes)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote_plus

from schemas.events import (
    SEAWEEDFS_EVENT_SOURCE,
    S3BucketRef,
    S3Entity,
    S3EventNotification,
    S3EventRecord,
    S3ObjectRef,
)
from workers.bridge.filer_proto import Entry, EventNotification

BUCKETS_ROOT = "/buckets/"
# `capstream submit` publishes its own events and marks its uploads with this user metadata
# (x-amz-meta-capstream-event), so the bridge does not announce them a second time.
SUBMIT_MARKER = "capstream-event"
_SUBMIT_HEADER = f"X-Amz-Meta-{SUBMIT_MARKER}"
_MULTIPART_HEADER = "X-Seaweedfs-Upload-Id"
# SeaweedFS's S3 gateway keeps in-progress multipart parts under <bucket>/.uploads/.
_UPLOADS_DIR = ".uploads/"


@dataclass(frozen=True)
class Skipped:
    """Not an object creation; ``reason`` is a stable code for counters and logs."""

    reason: str
    path: str


def translate(record_key: str | None, event: EventNotification, region: str) -> S3EventNotification | Skipped:
    """``record_key`` is the Kafka key weed sets: the entry's full path (the old one on renames)."""
    new = event.new_entry
    old_path = record_key or ""
    if new is None:
        return _removal(old_path, event, region)
    parent = event.new_parent_path or old_path.rpartition("/")[0]
    path = f"{parent.rstrip('/')}/{new.name}"
    if (skipped := _not_an_object(path, new, event)) is not None:
        return skipped
    bucket, _, key = path.removeprefix(BUCKETS_ROOT).partition("/")
    if new.header(_SUBMIT_HEADER) is not None:
        return Skipped("published_by_submit", path)
    if event.old_entry is not None and old_path == path and _same_content(event.old_entry, new):
        return Skipped("metadata_only", path)  # tagging, retention, legal hold, ACL
    etag = new.etag
    return S3EventNotification(
        Records=[
            S3EventRecord(
                event_source=SEAWEEDFS_EVENT_SOURCE,
                aws_region=region,
                event_time=datetime.fromtimestamp(new.content_ns / 1e9, UTC),
                event_name="ObjectCreated:CompleteMultipartUpload"
                if new.header(_MULTIPART_HEADER)
                else "ObjectCreated:Put",
                s3=S3Entity(
                    bucket=S3BucketRef(name=bucket, arn=f"arn:aws:s3:::{bucket}"),
                    object=S3ObjectRef(
                        key=quote_plus(key, safe="/"),
                        size=new.file_size,
                        e_tag=etag,
                        sequencer=sequencer(new),
                        content_type=new.mime or None,
                    ),
                ),
            )
        ]
    )


def _not_an_object(path: str, entry: Entry, event: EventNotification) -> Skipped | None:
    if not path.startswith(BUCKETS_ROOT):
        return Skipped("outside_buckets", path)
    bucket, _, key = path.removeprefix(BUCKETS_ROOT).partition("/")
    if not key or bucket.startswith("."):
        return Skipped("bucket_entry", path)  # /buckets/<b> itself, /buckets/.system/...
    if entry.is_directory:
        return Skipped("directory", path)
    if key.startswith(_UPLOADS_DIR):
        return Skipped("multipart_part", path)
    if event.is_from_other_cluster:
        # Active-active replication: the cluster where the change happened announces it.
        return Skipped("replicated", path)
    return None


def _removal(path: str, event: EventNotification, region: str) -> S3EventNotification | Skipped:
    """A deleted file: ObjectRemoved:Delete, ordered after every write of that key."""
    old = event.old_entry
    if old is None:
        return Skipped("empty_event", path)
    if (skipped := _not_an_object(path, old, event)) is not None:
        return skipped
    bucket, _, key = path.removeprefix(BUCKETS_ROOT).partition("/")
    now_ns = time.time_ns()  # a delete has no content time; it happens after every write
    return S3EventNotification(
        Records=[
            S3EventRecord(
                event_source=SEAWEEDFS_EVENT_SOURCE,
                aws_region=region,
                event_time=datetime.fromtimestamp(now_ns / 1e9, UTC),
                event_name="ObjectRemoved:Delete",
                s3=S3Entity(
                    bucket=S3BucketRef(name=bucket, arn=f"arn:aws:s3:::{bucket}"),
                    object=S3ObjectRef(key=quote_plus(key, safe="/"), sequencer=f"{now_ns:016X}"),
                ),
            )
        ]
    )


def sequencer(entry: Entry) -> str:
    """Orders versions of one key like S3's sequencer: hex of the content's write time (ns)."""
    return f"{entry.content_ns:016X}"


def _same_content(old: Entry, new: Entry) -> bool:
    return (old.etag, old.file_size, old.content_ns) == (new.etag, new.file_size, new.content_ns)
