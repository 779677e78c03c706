"""``ask`` in the client: the answer event of ``/ask``'s stream, errors in the stream, and the
request's body, against an httpx.MockTransport."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from workers.client import AskFailed, AsyncCapstreamClient, CapstreamClient, InvalidRequest

BASE = "http://capstream.test"
MOMENT = {
    "id": "m1",
    "object_id": "o1",
    "segment_id": "s1",
    "uri": "s3://media/report.pdf",
    "start_s": 0.0,
    "end_s": 0.0,
    "modality": "page",
    "page_number": 3,
    "text": "revenue table",
    "said": None,
    "with_frame": True,
    "media_url": "http://s3/media/report.pdf?sig#page=3",
}
ANSWER = {
    "question": "What was the revenue?",
    "question_truncated": False,
    "answer": "41 million euros.",
    "found": True,
    "citations": [MOMENT],
    "moments": [MOMENT],
    "cut_off": False,
    "notice": None,
    "timings": {
        "retrieval_ms": 12.0,
        "model_ms": 300.0,
        "visual_tokens": 64,
        "prompt_tokens": 500,
        "completion_tokens": 20,
    },
}


def stream(*events: tuple[str, object]) -> str:
    return "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events)


def transport(body: str, seen: list[httpx.Request], status: int = 200) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, text=body, headers={"content-type": "text/event-stream"})

    return httpx.MockTransport(handle)


def test_ask_returns_the_answer_event_with_its_citations() -> None:
    seen: list[httpx.Request] = []
    body = stream(("moments", {"moments": [MOMENT]}), ("answer", ANSWER), ("done", {}))
    with CapstreamClient(BASE, "csk_x", transport=transport(body, seen)) as client:
        answer = client.ask("What was the revenue?", k=4, object_id="o1")
    assert answer.citations[0].page_number == 3 and answer.citations[0].media_url.endswith("#page=3")
    assert seen[0].method == "POST" and seen[0].url.path == "/ask"
    assert json.loads(seen[0].content) == {"question": "What was the revenue?", "k": 4, "object_id": "o1"}
    assert seen[0].headers["authorization"] == "Bearer csk_x"


def test_an_error_in_the_stream_or_no_answer_raises() -> None:
    failing = stream(("moments", {"moments": []}), ("error", {"detail": "RuntimeError: engine died"}))
    with (
        CapstreamClient(BASE, "k", transport=transport(failing, [])) as client,
        pytest.raises(AskFailed, match="engine died"),
    ):
        client.ask("q")
    with CapstreamClient(BASE, "k", transport=transport(stream(("done", {})), [])) as client:
        with pytest.raises(AskFailed, match="without an answer"):
            client.ask("q")


def test_the_async_client_asks_too_and_maps_a_422() -> None:
    async def go() -> None:
        async_transport = httpx.MockTransport(
            lambda r: (
                httpx.Response(200, text=stream(("answer", ANSWER)))
                if json.loads(r.content)["question"].strip()
                else httpx.Response(422, json={"detail": "question: empty"})
            )
        )
        async with AsyncCapstreamClient(BASE, "k", transport=async_transport, retries=0) as client:
            assert (await client.ask("What was the revenue?")).answer == "41 million euros."
            with pytest.raises(InvalidRequest):
                await client.ask("  ")

    asyncio.run(go())
