"""The client's retry policy and error mapping against an httpx.MockTransport: a fake server of
scripted answers, counting calls. Waits are milliseconds (a tiny backoff)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from workers.client import (
    AsyncCapstreamClient,
    CapstreamClient,
    CapstreamError,
    CursorExpired,
    InvalidRequest,
    NoResponse,
    NotFound,
    RateLimited,
    Unauthorized,
)
from workers.client.retry import RetryPolicy

BASE = "http://capstream.test"
HIT = {
    "object_id": "o1",
    "segment_id": "s1",
    "uri": "s3://media/clips/cat.mp4",
    "bucket": "media",
    "key": "clips/cat.mp4",
    "start_s": 0.0,
    "end_s": 5.0,
    "caption": "A kitten.",
    "modality": "visual",
    "language": None,
    "collection": "clips",
    "score": 0.9,
    "also": [],
    "thumbnail_url": "/thumbnails/s1",
    "media_url": None,
    "new_field_from_a_newer_server": 1,
}


def page(hits: list[dict[str, Any]], next_cursor: str | None = None) -> dict[str, Any]:
    return {
        "query": "kitten",
        "mode": "hybrid",
        "truncated": False,
        "notice": None,
        "took_ms": 1.0,
        "hits": hits,
        "next_cursor": next_cursor,
    }


class Script:
    """Answers requests in order from a list of responses (or exceptions to raise); records requests."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def ok(body: dict[str, Any]) -> httpx.Response:
    return httpx.Response(200, json=body)


def error(status: int, detail: Any = "no", headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json={"detail": detail}, headers=headers)


@pytest.fixture
def client() -> Iterator[Callable[..., CapstreamClient]]:
    made: list[CapstreamClient] = []

    def make(script: Script, **options: Any) -> CapstreamClient:
        made.append(CapstreamClient(BASE, "csk_test", transport=httpx.MockTransport(script), backoff=0.001, **options))
        return made[-1]

    yield make
    for c in made:
        c.close()


def test_503_twice_then_200_is_one_answer_after_three_calls(client: Callable[..., CapstreamClient]) -> None:
    script = Script(error(503, "starting"), error(503, "starting"), ok(page([HIT])))
    result = client(script).search("kitten", k=1)
    assert [h.segment_id for h in result.hits] == ["s1"] and len(script.requests) == 3
    assert {r.headers["authorization"] for r in script.requests} == {"Bearer csk_test"}
    assert dict(script.requests[0].url.params) == {"q": "kitten", "k": "1", "merge": "true"}


@pytest.mark.parametrize("status", [502, 504])
def test_gateway_errors_are_retried(client: Callable[..., CapstreamClient], status: int) -> None:
    script = Script(error(status), ok({"status": "ok", "indexed_rows": 3, "auth": True}))
    assert client(script).health().indexed_rows == 3 and len(script.requests) == 2


def test_429_waits_its_retry_after_then_asks_again(client: Callable[..., CapstreamClient]) -> None:
    script = Script(error(429, "slow down", {"Retry-After": "0"}), ok(page([HIT])))
    assert len(client(script).search("kitten").hits) == 1 and len(script.requests) == 2


def test_a_retry_after_longer_than_the_cap_is_raised_at_once(client: Callable[..., CapstreamClient]) -> None:
    script = Script(error(429, "slow down", {"Retry-After": "45"}))
    with pytest.raises(RateLimited) as raised:
        client(script, max_retry_after=10).search("kitten")
    assert raised.value.retry_after == 45 and raised.value.status == 429 and len(script.requests) == 1


@pytest.mark.parametrize(
    ("status", "detail", "kind"),
    [
        (401, "a valid API key is required", Unauthorized),
        (404, "no such object", NotFound),
        (410, "cursor gone", CursorExpired),
        (422, "q is longer than 16384 characters", InvalidRequest),
        (400, "bad", CapstreamError),
        (500, "boom", CapstreamError),
    ],
)
def test_other_errors_raise_their_type_without_a_retry(
    client: Callable[..., CapstreamClient], status: int, detail: str, kind: type[CapstreamError]
) -> None:
    script = Script(error(status, detail), ok({}))
    with pytest.raises(kind) as raised:
        client(script).object("o1")
    assert type(raised.value) is kind and raised.value.status == status and raised.value.detail == detail
    assert len(script.requests) == 1


def test_a_422_names_the_parameter_from_fastapis_loc(client: Callable[..., CapstreamClient]) -> None:
    detail = [{"type": "less_than_equal", "loc": ["query", "k"], "msg": "Input should be <= 200", "input": "201"}]
    with pytest.raises(InvalidRequest) as raised:
        client(Script(error(422, detail))).search("x", k=201)
    assert raised.value.param == "k" and "(k)" in str(raised.value)


def test_retries_exhausted_raise_the_last_error(client: Callable[..., CapstreamClient]) -> None:
    script = Script(*[error(503, "down")] * 3)
    with pytest.raises(CapstreamError) as raised:
        client(script, retries=2).health()
    assert raised.value.status == 503 and raised.value.detail == "down" and len(script.requests) == 3

    limited = Script(*[error(429, "slow down", {"Retry-After": "0"})] * 4)
    with pytest.raises(RateLimited) as over:
        client(limited).health()
    assert over.value.retry_after == 0 and len(limited.requests) == 4


def test_connection_errors_are_retried_then_raised_as_no_response(client: Callable[..., CapstreamClient]) -> None:
    refused = httpx.ConnectError("connection refused")
    script = Script(refused, ok({"status": "ok", "indexed_rows": None, "auth": False}))
    assert client(script).health().auth is False and len(script.requests) == 2

    down = Script(*[httpx.ConnectError("connection refused")] * 4)
    with pytest.raises(NoResponse) as raised:
        client(down).health()
    assert isinstance(raised.value.__cause__, httpx.ConnectError) and len(down.requests) == 4


def test_a_read_timeout_is_not_repeated(client: Callable[..., CapstreamClient]) -> None:
    script = Script(httpx.ReadTimeout("slow"), ok({}))
    with pytest.raises(NoResponse):
        client(script).search("kitten")
    assert len(script.requests) == 1


def test_search_all_follows_cursors_and_stops_at_max_hits(client: Callable[..., CapstreamClient]) -> None:
    hits = [HIT | {"segment_id": f"s{i}"} for i in range(5)]
    script = Script(ok(page(hits[:2], "c1")), ok(page(hits[2:4], "c2")), ok(page(hits[4:])))
    assert [h.segment_id for h in client(script).search_all("kitten", k=2)] == [f"s{i}" for i in range(5)]
    assert [r.url.params.get("cursor") for r in script.requests] == [None, "c1", "c2"]
    assert {r.url.params["k"] for r in script.requests} == {"2"}

    capped = Script(ok(page(hits[:2], "c1")), ok(page(hits[2:4], "c2")))
    assert len(list(client(capped).search_all("kitten", k=2, max_hits=3))) == 3 and len(capped.requests) == 2


def test_unknown_fields_are_ignored(client: Callable[..., CapstreamClient]) -> None:
    body = page([HIT]) | {"facets": {"modality": {"visual": 1}}}
    hit = client(Script(ok(body))).search("kitten").hits[0]
    assert hit.thumbnail_url == "/thumbnails/s1" and not hasattr(hit, "new_field_from_a_newer_server")


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    policy = RetryPolicy(retries=10, backoff=1.0, max_backoff=4.0)
    for attempt, step in [(0, 1.0), (1, 2.0), (2, 4.0), (5, 4.0)]:
        waits = {policy.backoff_s(attempt) for _ in range(20)}
        assert all(step / 2 <= w <= step for w in waits) and len(waits) > 1


async def test_the_async_client_retries_the_same_way() -> None:
    answers = [error(503), error(429, "slow", {"Retry-After": "0"}), ok(page([HIT], "c1")), ok(page([]))]
    requests: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return answers.pop(0)

    async with AsyncCapstreamClient(BASE, "csk_a", transport=httpx.MockTransport(handler), backoff=0.001) as c:
        assert [h.segment_id async for h in c.search_all("kitten")] == ["s1"]
    assert len(requests) == 4 and requests[-1].url.params["cursor"] == "c1"

    async with AsyncCapstreamClient(BASE, "csk_a", transport=httpx.MockTransport(handler), backoff=0.001) as c:
        answers.append(error(404, "no such object"))
        with pytest.raises(NotFound):
            await c.object("o1")
    assert len(requests) == 5


def test_thumbnail_and_openapi_paths(client: Callable[..., CapstreamClient]) -> None:
    script = Script(httpx.Response(200, content=b"\xff\xd8\xff"), ok({"openapi": "3.1.0"}))
    c = client(script)
    assert c.thumbnail("a/b") == b"\xff\xd8\xff" and c.openapi() == {"openapi": "3.1.0"}
    assert [r.url.raw_path for r in script.requests] == [b"/thumbnails/a%2Fb", b"/openapi.json"]
