"""The shared consumer loop against a real broker: commit only after outputs are acked,
pause/resume under load, poison records to the DLQ, restart resumes without loss.

Two tests hold on to the loop's own broker clients by wrapping the factories the loop calls:
the consumer, to ask the broker client which partitions are paused; the producer, to hold the
broker's acknowledgements back from the loop (the records still reach the real broker).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from redis.asyncio import Redis

from schemas.base import Message
from schemas.dead_letter import DeadLetter
from tests.poison_harness import eventually, produce, running
from workers.localstack import StackEndpoints, free_port, start_redis, stop_process
from workers.runtime import loop as loop_module
from workers.runtime.errors import PermanentError
from workers.runtime.kafka import dlq_topic, ensure_topics, make_consumer, make_producer, read_topics
from workers.runtime.loop import StageLoop
from workers.runtime.stage import Output, RecordContext, Stage
from workers.settings import CommonSettings

pytestmark = pytest.mark.integration


class Echo(Message):
    n: int


class EchoStage(Stage[Echo]):
    """Copies each record to the output topic; knobs make it slow, flaky or poisoned."""

    name = "echo"

    def __init__(self, in_topic: str, out_topic: str, delay_s: float = 0.0, flaky: set[int] | None = None) -> None:
        self.input_topic = in_topic
        self.output_topics = (out_topic,)
        self.delay_s = delay_s
        self.flaky = set(flaky or ())
        self.seen: list[int] = []
        self.delivered_ns: list[int] = []
        self.in_flight = 0
        self.max_in_flight_seen = 0

    def parse(self, value: bytes) -> Echo:
        try:
            return Echo.model_validate_json(value)
        except ValueError as exc:
            raise PermanentError("malformed_echo", str(exc)) from exc

    async def process(self, item: Echo, ctx: RecordContext) -> AsyncGenerator[Output, None]:
        self.in_flight += 1
        self.max_in_flight_seen = max(self.max_in_flight_seen, self.in_flight)
        try:
            self.seen.append(item.n)
            await asyncio.sleep(self.delay_s)
            if item.n in self.flaky:
                self.flaky.discard(item.n)  # fails once, then succeeds on retry
                raise ConnectionError("transient blip")
            yield Output(self.output_topics[0], str(item.n), item)
        finally:
            self.in_flight -= 1

    async def delivered(self, item: Echo, ctx: RecordContext) -> None:
        self.delivered_ns.append(item.n)


def _settings(stack: StackEndpoints, **kw: Any) -> CommonSettings:
    defaults: dict[str, Any] = {"session_timeout_ms": 3000, "topic_partitions": 2, "retry_backoff_s": 0.05}
    return CommonSettings(kafka_bootstrap=stack.kafka_bootstrap, redis_url=stack.redis_url, **{**defaults, **kw})


def _echoes(n: int) -> list[bytes]:
    return [Echo(n=i).to_bytes() for i in range(n)]


async def _pipeline(
    stack: StackEndpoints, unique: str, values: list[bytes], **settings_kw: Any
) -> tuple[CommonSettings, str, str, str]:
    """Settings, fresh input/output topics and group for one test, with ``values`` produced."""
    settings = _settings(stack, **settings_kw)
    src, dst, group = f"in-{unique}", f"out-{unique}", f"g-{unique}"
    await ensure_topics(settings, [src, dst, dlq_topic(src)])
    await produce(settings, src, values)
    return settings, src, dst, group


async def _read_all(settings: CommonSettings, topic: str, expect: int, timeout_s: float = 20.0) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    out: list[bytes] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while len(out) < expect and loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            out += [r.value for recs in batch.values() for r in recs]
    finally:
        await consumer.stop()
    return out


async def _run_until(loop: StageLoop[Any], cond: Callable[[], bool], what: str) -> None:
    """The loop runs until ``cond`` holds, then stops (draining and committing)."""
    async with running(loop) as task:
        await eventually(cond, what, loop_task=task, timeout_s=30)


async def _committed_by_partition(settings: CommonSettings, group: str, topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return {p: await consumer.committed(TopicPartition(topic, p)) or 0 for p in range(settings.topic_partitions)}
    finally:
        await consumer.stop()


async def _committed(settings: CommonSettings, group: str, topic: str) -> int:
    return sum((await _committed_by_partition(settings, group, topic)).values())


async def test_outputs_acked_then_committed_with_bounded_in_flight(stack: StackEndpoints, unique: str) -> None:
    settings, src, dst, group = await _pipeline(stack, unique, _echoes(30))
    stage = EchoStage(src, dst, delay_s=0.02)
    loop = StageLoop(stage, settings, group, max_in_flight=3)
    await _run_until(loop, lambda: len(stage.delivered_ns) >= 30, "not all 30 records were delivered")
    outputs = await _read_all(settings, dst, 30)
    assert sorted(Echo.model_validate_json(v).n for v in outputs) == list(range(30))
    assert await _committed(settings, group, src) == 30
    assert stage.max_in_flight_seen <= 3
    assert loop.metrics.pauses >= 1  # in-flight was full, partitions paused while polling continued


class GatedEchoStage(EchoStage):
    """Holds every record in ``process`` until the test opens the gate."""

    def __init__(self, in_topic: str, out_topic: str) -> None:
        super().__init__(in_topic, out_topic)
        self.gate = asyncio.Event()

    async def process(self, item: Echo, ctx: RecordContext) -> AsyncGenerator[Output, None]:
        self.in_flight += 1
        try:
            await self.gate.wait()
        finally:
            self.in_flight -= 1
        yield Output(self.output_topics[0], str(item.n), item)


async def test_full_in_flight_pauses_the_partitions_and_a_free_slot_resumes_them(
    stack: StackEndpoints, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, src, dst, group = await _pipeline(stack, unique, _echoes(6))
    consumers: list[AIOKafkaConsumer] = []

    def recording_consumer(settings: CommonSettings, group_id: str) -> AIOKafkaConsumer:
        consumers.append(make_consumer(settings, group_id))
        return consumers[-1]

    monkeypatch.setattr(loop_module, "make_consumer", recording_consumer)
    stage = GatedEchoStage(src, dst)
    loop = StageLoop(stage, settings, group, max_in_flight=2)
    async with running(loop, release=stage.gate) as task:
        await eventually(lambda: stage.in_flight == 2, "the stage never filled its slots")
        [consumer] = consumers

        def all_paused() -> bool:
            assigned = consumer.assignment()
            return bool(assigned) and consumer.paused() == assigned

        await eventually(all_paused, f"partitions {consumer.assignment()} never paused at full in-flight", timeout_s=10)
        await asyncio.sleep(0.5)  # several poll passes while paused: still 2 in flight, still paused
        assert stage.in_flight == 2 and all_paused() and not task.done()
        stage.gate.set()
        await eventually(lambda: len(stage.delivered_ns) == 6, "records after the pause were not delivered")
        await eventually(lambda: not consumer.paused(), "free slots did not resume the partitions", timeout_s=10)
    assert sorted(stage.delivered_ns) == list(range(6)) and loop.metrics.pauses >= 1


class HeldAcks:
    """The loop's real producer, with the broker's acknowledgements passed on only once the
    gate opens: the records are on the broker, the loop just does not know it yet."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.acked_by_broker = 0

    def producer(self, settings: CommonSettings) -> AIOKafkaProducer:
        real = make_producer(settings)
        send = real.send

        async def held_send(*args: Any, **kwargs: Any) -> asyncio.Future[Any]:
            broker_ack = await send(*args, **kwargs)

            async def held() -> Any:
                metadata = await broker_ack
                self.acked_by_broker += 1
                await self.gate.wait()
                return metadata

            return asyncio.ensure_future(held())

        real.send = held_send  # type: ignore[method-assign]
        return real


async def test_no_commit_until_the_broker_acknowledged_the_outputs(
    stack: StackEndpoints, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, src, dst, group = await _pipeline(stack, unique, _echoes(10))
    acks = HeldAcks()
    monkeypatch.setattr(loop_module, "make_producer", acks.producer)
    stage = EchoStage(src, dst)
    loop = StageLoop(stage, settings, group, max_in_flight=10)
    async with running(loop, release=acks.gate) as task:
        await eventually(lambda: acks.acked_by_broker == 10, "the outputs never reached the broker")
        assert len(await _read_all(settings, dst, 10)) == 10  # durable on the broker...
        await asyncio.sleep(1.0)  # ...and the loop keeps polling and committing what it may
        assert not task.done()
        assert await _committed(settings, group, src) == 0, "committed before the outputs' acks reached the loop"
        assert stage.delivered_ns == [], "side effects ran before the acks"
        acks.gate.set()
        await eventually(lambda: len(stage.delivered_ns) == 10, "acks released but records not finished")
    assert await _committed(settings, group, src) == 10


async def test_poison_goes_to_dlq_and_transient_is_retried(stack: StackEndpoints, unique: str) -> None:
    settings, src, dst, group = await _pipeline(
        stack, unique, [Echo(n=0).to_bytes(), b"{not json", Echo(n=2).to_bytes()], max_attempts=3
    )
    stage = EchoStage(src, dst, flaky={2})
    loop = StageLoop(stage, settings, group, max_in_flight=8)
    await _run_until(
        loop, lambda: len(stage.delivered_ns) >= 2 and loop.metrics.dead_letters >= 1, "two delivered, one dead letter"
    )
    [letter_raw] = await _read_all(settings, dlq_topic(src), 1)
    letter = DeadLetter.model_validate_json(letter_raw)
    assert (letter.reason, letter.kind, letter.stage) == ("malformed_echo", "permanent", "echo")
    assert letter.payload == b"{not json" and letter.source_topic == src
    assert letter.record_time is not None and letter.first_attempt_at is not None
    assert letter.record_time <= letter.first_attempt_at <= letter.failed_at
    assert sorted(stage.delivered_ns) == [0, 2]
    assert loop.metrics.retries == 1
    assert await _committed(settings, group, src) == 3


async def test_restart_resumes_from_commit_without_loss(stack: StackEndpoints, unique: str) -> None:
    settings, src, dst, group = await _pipeline(stack, unique, _echoes(40))

    first = EchoStage(src, dst, delay_s=0.05)
    loop1 = StageLoop(first, settings, group, max_in_flight=8)
    task = asyncio.create_task(loop1.run(asyncio.Event()))
    await eventually(
        lambda: len(first.delivered_ns) >= 10 and loop1.metrics.commits >= 1, "no commit to crash after", loop_task=task
    )
    task.cancel()  # a crash: no drain, no final commit
    with pytest.raises(asyncio.CancelledError):
        await task
    records = await read_topics(settings.kafka_bootstrap, [src])  # its last empty fetch lets a last commit land
    committed = await _committed_by_partition(settings, group, src)
    finished_before_crash = {
        Echo.model_validate_json(r.value or b"").n for r in records if r.offset < committed.get(r.partition, 0)
    }
    assert finished_before_crash, "the first run committed nothing: the test would show no resume"
    assert finished_before_crash <= set(first.delivered_ns)

    second = EchoStage(src, dst)
    loop2 = StageLoop(second, settings, group, max_in_flight=8)
    await _run_until(
        loop2, lambda: len(set(first.delivered_ns) | set(second.delivered_ns)) >= 40, "the restart lost records"
    )
    assert set(first.delivered_ns) | set(second.delivered_ns) == set(range(40))
    outputs = {Echo.model_validate_json(v).n for v in await _read_all(settings, dst, 40)}
    assert outputs == set(range(40))
    assert await _committed(settings, group, src) == 40
    # At-least-once: what was in flight at the crash comes again, but nothing committed does,
    # and each of the rest exactly once.
    assert sorted(second.seen) == sorted(set(range(40)) - finished_before_crash), "restart ignored the commit"


@pytest.mark.parametrize("max_in_flight", [1, 4])  # 1: the first member is paused when the rebalance comes
async def test_member_joining_mid_run_takes_partitions_without_loss(
    stack: StackEndpoints, unique: str, max_in_flight: int
) -> None:
    settings, src, dst, group = await _pipeline(stack, unique, _echoes(60), topic_partitions=4)
    first, second = EchoStage(src, dst, delay_s=0.05), EchoStage(src, dst, delay_s=0.05)
    stop = asyncio.Event()
    task1 = asyncio.create_task(StageLoop(first, settings, group, max_in_flight=max_in_flight).run(stop))
    await eventually(lambda: len(first.delivered_ns) >= 5, "the first member delivered nothing", loop_task=task1)
    task2 = asyncio.create_task(StageLoop(second, settings, group, max_in_flight=max_in_flight).run(stop))
    await eventually(
        lambda: len(set(first.delivered_ns) | set(second.delivered_ns)) >= 60,
        "records lost in the rebalance",
        timeout_s=60,
    )
    stop.set()
    await asyncio.wait_for(asyncio.gather(task1, task2), 60)
    assert second.delivered_ns, "the new member never got a partition"
    assert set(first.delivered_ns) | set(second.delivered_ns) == set(range(60))
    assert await _committed(settings, group, src) == 60


class RedisEchoStage(EchoStage):
    """Records each finished input in Redis, like the real stages' progress markers."""

    def __init__(self, in_topic: str, out_topic: str, redis: Redis) -> None:
        super().__init__(in_topic, out_topic, delay_s=0.05)
        self.redis = redis

    async def delivered(self, item: Echo, ctx: RecordContext) -> None:
        await self.redis.sadd("echo:done", item.n)
        await super().delivered(item, ctx)


async def test_redis_outage_holds_offsets_and_resumes_without_dead_letters(
    stack: StackEndpoints, unique: str, tmp_path: Path
) -> None:
    settings, src, dst, group = await _pipeline(
        stack, unique, _echoes(30), retry_backoff_s=0.1, outage_backoff_max_s=0.5
    )
    port = free_port()
    redis_proc = start_redis(tmp_path, port)
    redis = Redis.from_url(f"redis://127.0.0.1:{port}/0", socket_timeout=1, socket_connect_timeout=1)
    await _until(redis.ping)
    stage = RedisEchoStage(src, dst, redis)
    loop = StageLoop(stage, settings, group, max_in_flight=4)
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    try:
        await eventually(lambda: len(stage.delivered_ns) >= 5, "nothing delivered before the outage", loop_task=task)
        stop_process(redis_proc)  # Redis goes away mid-run
        await asyncio.sleep(3)
        stalled_at = len(stage.delivered_ns)
        assert stalled_at < 30 and loop.metrics.outage_waits > 0
        assert await _committed(settings, group, src) <= stalled_at
        redis_proc = start_redis(tmp_path, port)  # back, with its append-only file
        await eventually(
            lambda: len(set(stage.delivered_ns)) >= 30,
            "not all delivered once Redis was back",
            loop_task=task,
            timeout_s=60,
        )
        stop.set()
        await asyncio.wait_for(task, 30)
    finally:
        stop.set()
        stop_process(redis_proc)
        await redis.aclose()
    assert loop.metrics.dead_letters == 0
    assert set(stage.delivered_ns) == set(range(30))
    assert await _committed(settings, group, src) == 30


async def _until(probe: Any, timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            await probe()
            return
        except Exception:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.1)
