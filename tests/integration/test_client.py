"""``workers.client`` against a live ``capstream serve`` (a subprocess, as in test_search_serve.py:
offline MiniLM on vLLM, the test stack's Redis and S3, a LanceDB table in a tmp dir): typed
answers, pages followed to the end, errors typed, and no drift from the live OpenAPI document."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.search_fixtures import COLLECTIONS, DOCS
from tests.serve_process import CAT, STOCK, Server, running_serve
from workers.client import (
    AsyncCapstreamClient,
    CapstreamClient,
    CursorExpired,
    Health,
    Hit,
    InvalidRequest,
    NotFound,
    ObjectInfo,
    RateLimited,
    SearchPage,
    Unauthorized,
    schema_drift,
)
from workers.localstack import StackEndpoints

pytestmark = pytest.mark.e2e  # the real vLLM MiniLM engine embeds the queries

RATE_LIMIT = 100  # per key per minute: the tests' own traffic stays far below it, but for "limited"
TIMEOUT = 60.0  # the first query waits for the engine


@pytest.fixture(scope="module")
def server(stack: StackEndpoints, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """This module's rate limit and the default depth."""
    env = {"CAPSTREAM_SERVE_RATE_LIMIT_PER_MIN": str(RATE_LIMIT)}
    with running_serve(stack, tmp_path_factory.mktemp("client-serve"), env) as server:
        yield server


def client(server: Server, who: str, **options: object) -> CapstreamClient:
    return CapstreamClient(server.url, server.tokens.get(who, who), timeout=TIMEOUT, **options)  # type: ignore[arg-type]


def segments_of(collection: str | None) -> set[str]:
    return {d.segment_id for d in DOCS if collection is None or COLLECTIONS.of(d.bucket, d.key) == collection}


def test_health_and_no_drift_from_the_live_openapi(server: Server) -> None:
    with client(server, "every") as c:
        health = c.health()
        assert isinstance(health, Health) and health.indexed_rows == len(DOCS) and health.auth is True
        assert schema_drift(c.openapi()) == []


def test_search_returns_typed_hits(server: Server) -> None:
    with client(server, "every") as c:
        page = c.search("a kitten playing with yarn", k=3)
        assert isinstance(page, SearchPage) and page.mode == "hybrid" and page.truncated is False
        assert len(page.hits) == 3 and all(isinstance(h, Hit) for h in page.hits) and page.next_cursor
        top = page.hits[0]
        assert (top.segment_id, top.object_id, top.start_s, top.end_s) == (CAT.segment_id, CAT.object_id, 0.0, 5.0)
        assert top.collection == "clips" and top.media_url and top.media_url.endswith("#t=0.000,5.000")
        assert top.thumbnail_url == f"/thumbnails/{CAT.segment_id}"
        assert c.thumbnail(top.segment_id)[:3] == b"\xff\xd8\xff"
        filtered = c.search("market", bucket="archive", mode="text")
        assert filtered.hits and {h.bucket for h in filtered.hits} == {"archive"}


@pytest.mark.parametrize(("who", "collection"), [("every", None), ("clips", "clips"), ("archive", "archive")])
def test_search_all_pages_through_every_row_once(server: Server, who: str, collection: str | None) -> None:
    with client(server, who) as c:
        ids = [h.segment_id for h in c.search_all("a chef cooking in a kitchen", k=4, per_object=0, mode="vector")]
        assert len(ids) == len(set(ids)), "a hit repeated across pages"
        assert set(ids) == segments_of(collection)
        first = [h.segment_id for h in c.search_all("a chef cooking in a kitchen", k=4, per_object=0, max_hits=5)]
        assert len(first) == min(5, len(ids))


def test_object_and_another_collections_object(server: Server) -> None:
    with client(server, "clips") as clips, client(server, "archive") as archive:
        info = clips.object(CAT.object_id)
        assert isinstance(info, ObjectInfo) and info.progress and info.progress["segments_total"] == 2
        assert [s.segment_index for s in info.indexed] == [0, 1] and info.indexed[0].segment_id == CAT.segment_id
        assert archive.object(STOCK.object_id).indexed[0].segment_id == STOCK.segment_id
        with pytest.raises(NotFound) as other:
            archive.object(CAT.object_id)
        with pytest.raises(NotFound) as missing:
            archive.object(str(uuid.uuid4()))
        assert other.value.detail == missing.value.detail  # no existence leak
        with pytest.raises(NotFound):
            archive.thumbnail(CAT.segment_id)


@pytest.mark.parametrize("who", ["revoked", "csk_not-a-real-key", ""])
def test_a_bad_key_is_unauthorized(server: Server, who: str) -> None:
    with client(server, who) as c:
        with pytest.raises(Unauthorized) as raised:
            c.search("kitten")
        assert raised.value.status == 401
        with pytest.raises(Unauthorized):
            c.object(CAT.object_id)
        assert c.health().status == "ok"  # the one open route


def test_invalid_requests_and_expired_cursors(server: Server) -> None:
    with client(server, "every") as c:
        with pytest.raises(InvalidRequest) as too_many:
            c.search("kitten", k=201)
        assert too_many.value.param == "k" and too_many.value.status == 422
        with pytest.raises(InvalidRequest) as blank:
            c.search("   ")
        assert blank.value.param is None and blank.value.detail
        with pytest.raises(CursorExpired):
            c.search("kitten", cursor="not-a-cursor")
        cursor = c.search("kitten", k=2).next_cursor
        with pytest.raises(InvalidRequest, match="another query"):
            c.search("boats", k=2, cursor=cursor)


def test_over_the_rate_limit_is_rate_limited_with_its_wait(server: Server) -> None:
    # max_retry_after=0: the server's wait (1-60 s) is longer than the client may sleep, so it raises at once.
    with client(server, "limited", max_retry_after=0) as c:
        for _ in range(2 * RATE_LIMIT + 1):  # the window may turn over once during the burst
            try:
                c.object(str(uuid.uuid4()))
            except NotFound:
                continue
            except RateLimited as exc:
                assert exc.retry_after is not None and 1 <= exc.retry_after <= 60
                break
        else:
            pytest.fail("never rate limited")


async def test_the_async_client_pages_the_same(server: Server) -> None:
    with client(server, "every") as c:
        expected = [h.segment_id for h in c.search_all("a sailing boat", k=5, per_object=0, mode="vector")]
    async with AsyncCapstreamClient(server.url, server.tokens["every"], timeout=TIMEOUT) as ac:
        got = [h.segment_id async for h in ac.search_all("a sailing boat", k=5, per_object=0, mode="vector")]
        assert (await ac.health()).auth is True
        with pytest.raises(NotFound):
            await ac.object(str(uuid.uuid4()))
    assert got == expected and set(got) == segments_of(None)


def test_ask_returns_an_answer_citing_only_retrieved_moments(server: Server) -> None:
    with CapstreamClient(server.url, server.tokens["clips"], timeout=300) as c:
        answer = c.ask("What is the kitten doing?", k=3)
        assert 1 <= len(answer.moments) <= 3 and answer.timings.visual_tokens
        assert {m.id for m in answer.citations} <= {m.id for m in answer.moments}
        assert all(COLLECTIONS.of(*m.uri.removeprefix("s3://").split("/", 1)) == "clips" for m in answer.moments)
        with pytest.raises(NotFound):
            c.ask("market", object_id=STOCK.object_id)  # another collection's object
