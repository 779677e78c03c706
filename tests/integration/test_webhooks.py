"""Webhooks against the real stack: progress transitions in Redis -> the outbox -> the relay ->
``media.outcomes`` on Tansu -> the webhooks stage -> a local receiver on 127.0.0.1.

One run covers what a subscriber relies on: every POST is signed with the webhook's secret over
its exact body; a 500 is retried with the same delivery id until a 2xx; a receiver that keeps
failing, or hangs, ends in one dead letter naming it after the configured tries; a hung
receiver does not hold back the others; a redelivered outcome is not sent again; an address
the vetting refuses is never connected to; another collection's webhook hears nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from schemas.outcome import ObjectOutcome
from workers.localstack import StackEndpoints
from workers.runtime.kafka import dlq_topic, ensure_topics, read_topics
from workers.runtime.loop import StageLoop
from workers.settings import WebhookSettings
from workers.state import ProgressStore, RedisKeys
from workers.state.dead_letter_log import read_letters
from workers.webhooks.signing import SIGNATURE_HEADER, verify
from workers.webhooks.stage import WebhookStage
from workers.webhooks.store import WebhookStore

pytestmark = pytest.mark.integration


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A minimal HTTP/1.1 server: ``/ok`` answers 204, ``/flaky`` 500 twice then 204, ``/down``
    always 500, ``/hang`` never answers (until ``release``)."""

    requests: dict[str, list[Request]] = field(default_factory=lambda: defaultdict(list))
    release: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            line, *lines = head.decode().split("\r\n")
            headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in lines if h)}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            path = line.split()[1]
            self.requests[path].append(Request(path, headers, body))
            if path == "/hang":
                await self.release.wait()
            ok = path == "/ok" or (path == "/flaky" and len(self.requests[path]) > 2)
            status = b"204 No Content" if ok else b"500 Internal Server Error"
            writer.write(b"HTTP/1.1 " + status + b"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@asynccontextmanager
async def receiving() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    server = await asyncio.start_server(receiver.handle, "127.0.0.1", 0)
    receiver.port = server.sockets[0].getsockname()[1]
    try:
        yield receiver
    finally:
        receiver.release.set()
        server.close()


def receiver_check(request: Request, secret: str) -> bool:
    """What a receiver in any language does (docs/webhooks.md), written here, not imported."""
    parts = dict(p.split("=", 1) for p in request.headers["capstream-signature"].split(","))
    mac = hmac.new(secret.encode(), parts["t"].encode() + b"." + request.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(mac, parts["v1"]) and abs(time.time() - int(parts["t"])) < 300


async def eventually(check: Any, timeout_s: float = 60.0, what: str = "condition") -> Any:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not (result := await check()):
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)
    return result


async def test_signed_retried_dead_lettered_and_never_held_by_a_hung_receiver(
    stack_env: StackEndpoints, unique: str
) -> None:
    settings = WebhookSettings(
        topic_outcomes=f"outcomes-{unique}",
        webhooks_group=f"webhooks-{unique}",
        collections="clips=media/clips/;alerts=media/alerts/;archive=media/archive/",
        webhook_allow_private=True,  # the receiver is on 127.0.0.1
        webhook_max_attempts=3,
        webhook_backoff_s=0.1,
        webhook_timeout_s=4.0,
        retry_backoff_s=0.05,
        drain_timeout_s=10,
    )
    await ensure_topics(settings, [settings.topic_outcomes, dlq_topic(settings.topic_outcomes)])
    redis = Redis.from_url(settings.redis_url)
    keys = RedisKeys(settings.key_prefix)
    store, progress = WebhookStore(redis, keys), ProgressStore(redis, keys)
    async with receiving() as rx:
        ok = await store.add(rx.url("/ok"), ["clips"], ["object.done", "object.failed"])
        flaky = await store.add(rx.url("/flaky"), ["alerts"], ["object.done"])
        down = await store.add(rx.url("/down"), ["alerts"], ["object.done"])
        hang = await store.add(rx.url("/hang"), ["alerts"], ["object.done"])
        metadata = await store.add("http://169.254.169.254/latest/", ["alerts"], ["object.done"])
        await store.add(rx.url("/archive"), ["archive"], ["object.done", "object.failed"])

        stage = WebhookStage(settings, redis)
        loop = StageLoop(stage, settings, settings.webhooks_group, settings.webhook_max_in_flight)
        stop = asyncio.Event()
        task = asyncio.create_task(loop.run(stop))
        try:
            # The pipeline's side: objects finishing, as the stages' progress scripts see it.
            await progress.start("alert", "s3://media/alerts/fire.mp4")
            await progress.set_total("alert", 1)
            await progress.mark("embedded", "alert", "alert-0")
            clips = [f"clip{i}" for i in range(5)]
            for oid in clips:
                await progress.start(oid, f"s3://media/clips/{oid}.mp4?X-Amz-Signature=secret")
                await progress.set_total(oid, 1)
                await progress.mark("embedded", oid, f"{oid}-0")
            await progress.start("broken", "s3://media/clips/broken.mp4")
            await progress.fail("broken", "decode corrupt_media: no decodable frames")

            async def all_clips_delivered() -> bool:
                return len(rx.requests["/ok"]) == 6

            await eventually(all_clips_delivered, what="the ok receiver's 6 outcomes")
            # Every clip outcome reached /ok while the hung receiver was still on its first tries
            # (its outcome ends only after the last one times out).
            assert 1 <= len(rx.requests["/hang"]) < settings.webhook_max_attempts, "a hung receiver held the others"

            async def alert_letter() -> list[Any]:
                return [s for s in await read_letters(settings) if s.letter.source_topic == settings.topic_outcomes]

            letters = await eventually(alert_letter, what="the alert outcome's dead letter")
        finally:
            stop.set()
            await asyncio.wait_for(task, 60)

        # Signed over the exact body with the webhook's own secret; the source URI's query is gone.
        bodies = [json.loads(r.body) for r in rx.requests["/ok"]]
        assert all(receiver_check(r, ok.secret) for r in rx.requests["/ok"])
        assert all(verify(r.headers[SIGNATURE_HEADER.lower()], ok.secret, r.body) for r in rx.requests["/ok"])
        assert not verify(
            rx.requests["/ok"][0].headers[SIGNATURE_HEADER.lower()], flaky.secret, rx.requests["/ok"][0].body
        )
        assert sorted(b["data"]["object_id"] for b in bodies) == sorted([*clips, "broken"])
        assert {b["type"] for b in bodies} == {"object.done", "object.failed"}
        assert all("X-Amz" not in b["data"]["source_uri"] and b["data"]["collection"] == "clips" for b in bodies)
        failed = next(b for b in bodies if b["type"] == "object.failed")
        assert failed["data"]["error"].startswith("decode corrupt_media")

        # Retried on 500 with the same delivery id, then delivered.
        assert [r.headers["capstream-delivery"] for r in rx.requests["/flaky"]] == [
            rx.requests["/flaky"][0].headers["capstream-delivery"]
        ] * 3
        # Dead letter after N: one letter for the outcome, naming the receivers that never took it.
        assert len(letters) == 1
        letter = letters[0].letter
        assert letter.reason == "webhook_failed" and letter.stage == "webhooks" and letter.object_id == "alert"
        assert letter.attempts == 3
        assert len(rx.requests["/down"]) == 3 and len(rx.requests["/hang"]) == 3
        assert down.webhook_id in letter.message and hang.webhook_id in letter.message
        assert f"{metadata.webhook_id} address_not_allowed" in letter.message and "after 1 POST(s)" in letter.message
        assert flaky.webhook_id not in letter.message and ok.webhook_id not in letter.message
        assert rx.requests["/archive"] == []  # another collection's webhook
        assert await redis.xlen(keys.outcomes()) == 0  # the relay moved the outbox and emptied it

        # A redelivered outcome is not POSTed again to a webhook that took it.
        records = await read_topics(settings.kafka_bootstrap, [settings.topic_outcomes])
        first = ObjectOutcome.model_validate_json(records[0].value or b"")
        assert len(records) == 7
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(settings.topic_outcomes, first.to_bytes(), key=first.object_id.encode())
        finally:
            await producer.stop()
        loop = StageLoop(WebhookStage(settings, redis), settings, settings.webhooks_group, 4)
        stop = asyncio.Event()
        task = asyncio.create_task(loop.run(stop))
        try:

            async def consumed() -> bool:
                return loop.metrics.records >= 1

            await eventually(consumed, what="the redelivered outcome")
        finally:
            stop.set()
            await asyncio.wait_for(task, 60)
        if first.object_id != "alert":
            assert len(rx.requests["/ok"]) == 6
        else:
            assert len(rx.requests["/flaky"]) == 3
    await redis.aclose()
