"""The SeaweedFS event bridge on payloads captured from a real ``weed`` 4.48 filer
(tests/unit/data/seaweedfs_filer_events.json: one upload session with aiobotocore).

Whether the bridge's sequencers order versions as the decode worker needs is checked through
what the worker runs: ``SequencerStore``'s Lua script on a real redis-server.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from schemas.events import S3EventNotification, parse_event
from workers.bridge.filer_proto import EventNotification, FilerProtoError
from workers.bridge.translate import Skipped, translate
from workers.localstack import free_port, start_redis, stop_process
from workers.state import RedisKeys, SequencerOutcome, SequencerStore

CAPTURE = json.loads((Path(__file__).parent / "data" / "seaweedfs_filer_events.json").read_text())["events"]


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    proc = start_redis(tmp_path_factory.mktemp("bridge-redis"), port)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop_process(proc)


@pytest_asyncio.fixture
async def sequencers(redis_url: str) -> AsyncIterator[SequencerStore]:
    """The decode worker's per-key ordering of S3 events, under a fresh key prefix."""
    redis = Redis.from_url(redis_url)
    for _ in range(100):  # redis-server takes a moment to listen
        try:
            await redis.ping()
            break
        except RedisConnectionError:
            await asyncio.sleep(0.05)
    try:
        yield SequencerStore(redis, RedisKeys(f"t{uuid.uuid4().hex[:8]}"), ttl_s=60)
    finally:
        await redis.aclose()


async def _advance_all(store: SequencerStore, sequencers: list[str | None]) -> list[SequencerOutcome]:
    """What the decode worker decides for each event of one key, in arrival order."""
    outcomes = []
    for seq in sequencers:
        assert seq, "every bridged event carries a sequencer"
        outcomes.append(await store.advance("media", "clips/beach day.mp4", seq))
    return outcomes


def _events(label: str) -> list[tuple[str, EventNotification]]:
    found = [(e["key"], EventNotification.parse(bytes.fromhex(e["value_hex"]))) for e in CAPTURE if e["label"] == label]
    assert found, label
    return found


def _bridge(label: str) -> list[S3EventNotification | Skipped]:
    return [translate(key, event, "us-east-1") for key, event in _events(label)]


def _created(label: str) -> S3EventNotification:
    [note] = _bridge(label)
    assert isinstance(note, S3EventNotification), note
    return note


@pytest.mark.parametrize(
    ("label", "reason"),
    [
        ("bucket_dir", "bucket_entry"),
        ("implicit_dir", "directory"),
        ("folder_marker", "directory"),
        ("multipart_upload_dir", "directory"),
        ("multipart_part", "multipart_part"),
        ("multipart_part_cleanup", "multipart_part"),  # deleting parts is not deleting an object
        ("multipart_upload_cleanup", "directory"),
        ("put_tagging", "metadata_only"),
        ("put_by_capstream_submit", "published_by_submit"),
    ],
)
def test_non_creations_are_skipped(label: str, reason: str) -> None:
    assert {r.reason for r in _bridge(label) if isinstance(r, Skipped)} == {reason}
    assert all(isinstance(r, Skipped) for r in _bridge(label))


@pytest.mark.integration  # redis-server
async def test_a_deleted_file_becomes_object_removed_ordered_after_its_writes(
    sequencers: SequencerStore,
) -> None:
    [note] = _bridge("delete")
    assert isinstance(note, S3EventNotification), note
    batch = parse_event(note.to_bytes())
    assert batch.objects == []
    [removed] = batch.removed
    assert removed.event_name == "ObjectRemoved:Delete" and removed.source == "seaweedfs"
    created = parse_event(_created("put").to_bytes()).objects[0]
    assert removed.bucket == created.bucket
    # The delete wins over the write; the write arriving late is stale.
    assert await _advance_all(sequencers, [created.sequencer, removed.sequencer, created.sequencer]) == [
        SequencerOutcome.NEWER,
        SequencerOutcome.NEWER,
        SequencerOutcome.STALE,
    ]


def test_put_becomes_an_s3_notification_with_size_and_md5_etag() -> None:
    [obj] = parse_event(_created("put").to_bytes()).objects
    assert (obj.bucket, obj.key, obj.size) == ("media", "clips/beach day.mp4", 1000)
    assert obj.etag == hashlib.md5(b"x" * 1000).hexdigest()  # single-part ETag = hex MD5
    assert obj.content_type == "video/mp4" and obj.source == "seaweedfs"
    assert obj.event_name == "ObjectCreated:Put"


@pytest.mark.integration  # redis-server
async def test_overwrite_and_reupload_are_new_versions_in_order(sequencers: SequencerStore) -> None:
    labels = ("put", "overwrite", "reupload_same_content")
    objs = [parse_event(_created(label).to_bytes()).objects[0] for label in labels]
    assert objs[1].etag == hashlib.md5(b"y" * 2000).hexdigest() and objs[1].size == 2000
    assert len({o.object_id for o in objs}) == 3, "each PUT is a new object version, as on S3"
    put, overwrite, reupload = (o.sequencer for o in objs)
    # In order, each version is newer; redelivered afterwards, the older ones are stale.
    assert await _advance_all(sequencers, [put, overwrite, reupload, overwrite, put, reupload]) == [
        SequencerOutcome.NEWER,
        SequencerOutcome.NEWER,
        SequencerOutcome.NEWER,
        SequencerOutcome.STALE,
        SequencerOutcome.STALE,
        SequencerOutcome.CURRENT,
    ]


def test_copy_and_multipart_complete_are_creations() -> None:
    assert parse_event(_created("copy").to_bytes()).objects[0].key == "copy.mp4"
    [obj] = parse_event(_created("multipart_complete").to_bytes()).objects
    assert obj.event_name == "ObjectCreated:CompleteMultipartUpload"
    assert obj.size == 5 * 1024 * 1024 + 100 and obj.etag is not None and obj.etag.endswith("-2")


def test_the_same_filer_event_translates_identically() -> None:
    (key, event) = _events("overwrite")[0]
    a, b = translate(key, event, "us-east-1"), translate(key, event, "us-east-1")
    assert a == b, "a redelivered filer event must map to the same object version"


def test_replicated_events_are_skipped() -> None:
    key, event = _events("put")[0]
    replicated = EventNotification(
        new_entry=event.new_entry, new_parent_path=event.new_parent_path, is_from_other_cluster=True
    )
    assert translate(key, replicated, "us-east-1") == Skipped("replicated", key)


@pytest.mark.parametrize("payload", [b"\xff\xff\xff", b"\x0a\x05ab", b"", b"\x07"])
def test_garbage_is_a_proto_error(payload: bytes) -> None:
    with pytest.raises(FilerProtoError):
        EventNotification.parse(payload)


@pytest.mark.integration  # redis-server
@pytest.mark.parametrize(
    ("first", "then", "outcome"),
    [
        ("0055AED6DCD90281E5", "55AED6DCD90281E6", SequencerOutcome.NEWER),
        ("00A", "A", SequencerOutcome.CURRENT),
        ("FF", "100", SequencerOutcome.NEWER),  # left-padded, as S3 documents: not string order
        ("b", "A", SequencerOutcome.STALE),  # hex digits in either case
    ],
)
async def test_sequencers_compare_left_padded(
    sequencers: SequencerStore, first: str, then: str, outcome: SequencerOutcome
) -> None:
    assert await _advance_all(sequencers, [first, then]) == [SequencerOutcome.NEWER, outcome]
