"""The one consumer loop every stage runs in.

Poll -> run records concurrently (bounded) -> stream outputs to the broker -> await their
acks -> stage side effects -> commit the first unfinished offset per partition.
The parts with one job each live beside it: ``PausingManager`` (backpressure without leaving
the group), ``RecordAttempts`` (what to do after a failure), ``PartitionOffsets`` (the safe
commit point), ``dead_letters`` (the letter for a record that cannot be processed).
SIGTERM and partition revocation drain in-flight records and commit before letting go.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from datetime import UTC, datetime
from typing import Any, Generic

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from schemas.dead_letter import DeadLetter, ErrorKind
from workers.runtime.attempts import RecordAttempts, Then
from workers.runtime.dead_letters import dead_letter_for, describe, fallback_dead_letter
from workers.runtime.errors import FatalWorkerError
from workers.runtime.kafka import make_consumer, make_producer
from workers.runtime.metrics import Outcome, StageMetrics, WorkerMetrics
from workers.runtime.offsets import PartitionOffsets
from workers.runtime.pausing import PausingManager
from workers.runtime.stage import In, Output, RecordContext, RecordVerdict, Stage
from workers.settings import CommonSettings

# Await broker acks in groups so a long decode streams without unbounded pending sends.
_MAX_UNACKED_SENDS = 8


class LoopMetrics:
    """What a loop has done so far, read from its stage's Prometheus counters: one count, which
    tests, benches and ``/metrics`` all see (a loop shares its registry only with other stages)."""

    def __init__(self, stage: StageMetrics) -> None:
        self._stage = stage
        self._all = stage.metrics

    @property
    def records(self) -> int:
        """Records finished (any outcome but a retried try)."""
        return self._stage.total(self._all.records) - self.retries

    @property
    def retries(self) -> int:
        return self._stage.total(self._all.records, outcome=Outcome.RETRIED.value)

    @property
    def outputs(self) -> int:
        return self._stage.total(self._all.outputs)

    @property
    def dead_letters(self) -> int:
        return self._stage.total(self._all.dead_letters)

    @property
    def outage_waits(self) -> int:
        return self._stage.total(self._all.outage_waits)

    @property
    def commits(self) -> int:
        return self._stage.total(self._all.commits)

    @property
    def pauses(self) -> int:
        return self._stage.total(self._all.pauses)


class _RebalanceListener(ConsumerRebalanceListener):
    def __init__(self, loop: StageLoop[Any]) -> None:
        self._loop = loop

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._loop.release(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._loop.log.info("partitions_assigned", partitions=sorted(f"{tp.topic}/{tp.partition}" for tp in assigned))


class StageLoop(Generic[In]):
    def __init__(
        self,
        stage: Stage[In],
        settings: CommonSettings,
        group_id: str,
        max_in_flight: int,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self.stage = stage
        self.settings = settings
        self.group_id = group_id
        self.max_in_flight = max_in_flight
        self.stage_metrics = (metrics or WorkerMetrics()).for_stage(stage.name)
        self.metrics = LoopMetrics(self.stage_metrics)
        self._started_at = time.monotonic()
        self._lag_at = 0.0
        self._start_offsets: dict[TopicPartition, int] = {}  # committed (or earliest) when assigned
        self.log = structlog.get_logger("capstream.loop").bind(stage=stage.name)
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._tasks: dict[asyncio.Task[None], TopicPartition] = {}
        self._offsets: dict[TopicPartition, PartitionOffsets] = {}
        self._pausing: PausingManager | None = None
        self._fatal: BaseException | None = None

    @property
    def producer(self) -> AIOKafkaProducer:
        assert self._producer is not None, "loop not started"
        return self._producer

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, then drain and commit."""
        await self.stage.setup()
        self._producer = make_producer(self.settings)
        self._consumer = make_consumer(self.settings, self.group_id)
        self._pausing = PausingManager(self._consumer, self.log)
        await self._producer.start()
        try:
            self._consumer.subscribe([self.stage.input_topic], listener=_RebalanceListener(self))
            await self._consumer.start()
            self.log.info(
                "stage_started", topic=self.stage.input_topic, group=self.group_id, max_in_flight=self.max_in_flight
            )
            while not stop.is_set() and self._fatal is None:
                await self._poll_once()
                await self._commit()
                await self._report_lag()
            if self._fatal is not None:
                raise FatalWorkerError(str(self._fatal)) from self._fatal
            await self.release(set(self._offsets))
        finally:
            await self._shutdown()

    async def _poll_once(self) -> None:
        consumer, pausing = self._consumer, self._pausing
        assert consumer is not None and pausing is not None
        free = self.max_in_flight - len(self._tasks)
        self.stage_metrics.in_flight.set(len(self._tasks))
        if free <= 0:
            if await pausing.poll_paused(len(self._tasks)):
                self.stage_metrics.pauses.inc()
            self.stage_metrics.paused.set(1)
            if self._tasks:
                await asyncio.wait(list(self._tasks), timeout=0.2, return_when=asyncio.FIRST_COMPLETED)
            return
        pausing.resume()
        self.stage_metrics.paused.set(0)
        batches = await consumer.getmany(timeout_ms=200, max_records=free)
        for tp, records in batches.items():
            for record in records:
                self._offsets.setdefault(tp, PartitionOffsets()).start(record.offset)
                task = asyncio.create_task(self._handle(tp, record))
                self._tasks[task] = tp
                task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)
        if not task.cancelled() and task.exception() is not None and self._fatal is None:
            self._fatal = task.exception()

    async def _handle(self, tp: TopicPartition, record: Any) -> None:
        key = record.key.decode(errors="replace") if record.key else None
        log = self.log.bind(partition=tp.partition, offset=record.offset, key=key)
        metrics = self.stage_metrics
        attempts = self._attempts()
        item: In | None = None
        outputs_acked = False
        started_at = datetime.now(UTC)
        began = time.perf_counter()
        record_time = _record_time(record.timestamp)
        verdict = RecordVerdict()
        while True:
            attempt = attempts.begin()
            verdict.outcome = Outcome.DONE
            ctx = RecordContext(
                tp.topic,
                tp.partition,
                record.offset,
                key,
                record.value or b"",
                attempt,
                log,
                record_time,
                started_at,
                metrics,
                verdict,
            )
            try:
                item = self.stage.parse(ctx.value)
                if not outputs_acked:  # after an outage in `delivered`, do not redo the work
                    await self._deliver(self.stage.process(item, ctx))
                    outputs_acked = True
                await self.stage.delivered(item, ctx)
                metrics.record(verdict.outcome)
                break
            except FatalWorkerError:
                raise
            except Exception as exc:
                step = attempts.after_failure(exc)
                if step.then is Then.DEAD_LETTER:
                    assert step.kind is not None
                    await self._dead_letter(item, ctx, exc, step.kind)
                    metrics.record(Outcome.DEAD_LETTERED)
                    break
                if step.then is Then.WAIT:  # not the record's fault: the try did not count
                    metrics.outage_waits.inc()
                    log.warning("dependency_unavailable", error=describe(exc), wait_s=round(step.delay_s, 2))
                else:
                    metrics.record(Outcome.RETRIED)
                    log.warning("retrying", attempt=attempt, error=describe(exc), delay_s=round(step.delay_s, 3))
                await asyncio.sleep(step.delay_s)
        metrics.processing.observe(time.perf_counter() - began)
        offsets = self._offsets.get(tp)
        if offsets is not None:  # None: the partition was revoked and this record will be redelivered
            offsets.finish(record.offset)

    async def _deliver(self, outputs: AsyncGenerator[Output, None]) -> None:
        pending: list[asyncio.Future[Any]] = []
        # aclosing: on failure the stage's generator (and a decode thread behind it) stops now.
        async with aclosing(outputs):
            try:
                async for out in outputs:
                    pending.append(await self._send(out))
                    if len(pending) >= _MAX_UNACKED_SENDS:
                        await asyncio.gather(*pending)
                        pending.clear()
            finally:
                # Never leave a send's failure unretrieved; the first one is what we raise.
                results = await asyncio.gather(*pending, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _send(self, out: Output) -> asyncio.Future[Any]:
        self.stage_metrics.output(out.topic)
        fut: asyncio.Future[Any] = await self.producer.send(out.topic, value=out.value.to_bytes(), key=out.key.encode())
        return fut

    async def _dead_letter(self, item: In | None, ctx: RecordContext, exc: Exception, kind: ErrorKind) -> None:
        """Publish the dead letter, then mark the object failed.

        Whatever goes wrong here because of the record's content, the record still leaves
        its partition:
        1. build the letter; if that fails (an id the content breaks), build the fallback
           letter instead: raw bytes, both errors, reason `dead_letter_failed`;
        2. send it, waiting out broker outages; if the broker refuses it for another reason,
           send the fallback letter (no payload when it is large);
        3. run the stage's hook (progress `failed`), waiting out Redis outages; any other
           error there is logged, not raised: the letter is already durable.
        Only a DLQ that refuses even the fallback letter stops the worker (FatalWorkerError):
        that is not one record's content, and committing past the record would lose it.
        """
        max_payload = self.settings.max_message_bytes // 2
        try:
            out = dead_letter_for(
                self.stage.name,
                ctx,
                exc,
                kind,
                object_id=self.stage.object_id_of(item, ctx),
                max_payload_bytes=max_payload,
            )
        except Exception as build_exc:
            ctx.log.error("dead_letter_build_failed", error=describe(build_exc))
            out = fallback_dead_letter(self.stage.name, ctx, exc, build_exc, kind, max_payload_bytes=max_payload)
            item = None  # the hook must not trip over the same content
        try:
            await self._until_available(ctx, "dead_lettering", lambda: self._send_and_wait(out))
        except Exception as send_exc:
            ctx.log.error("dead_letter_send_failed", error=describe(send_exc))
            out = fallback_dead_letter(self.stage.name, ctx, exc, send_exc, kind, max_payload_bytes=max_payload // 4)
            item = None
            try:
                await self._until_available(ctx, "dead_lettering", lambda: self._send_and_wait(out))
            except Exception as fallback_exc:
                raise FatalWorkerError(f"cannot record dead letter: {describe(fallback_exc)}") from fallback_exc
        letter = out.value
        assert isinstance(letter, DeadLetter)
        try:
            await self._until_available(ctx, "dead_lettered_hook", lambda: self.stage.dead_lettered(item, letter, ctx))
        except Exception as hook_exc:
            ctx.log.error("dead_lettered_hook_failed", error=describe(hook_exc), reason=letter.reason)
        self.stage_metrics.dead_letter(letter.reason)
        ctx.log.error(
            "dead_lettered",
            reason=letter.reason,
            kind=kind,
            error=letter.message,
            attempts=ctx.attempt,
            object_id=letter.object_id,
            segment_id=letter.segment_id,
        )

    async def _send_and_wait(self, out: Output) -> None:
        await (await self._send(out))

    def _attempts(self) -> RecordAttempts:
        return RecordAttempts(
            self.settings.max_attempts, self.settings.retry_backoff_s, self.settings.outage_backoff_max_s
        )

    async def _until_available(self, ctx: RecordContext, doing: str, action: Callable[[], Awaitable[None]]) -> None:
        """Run `action`, waiting with capped backoff while the broker or Redis is unreachable
        (the outage rule of ``RecordAttempts``; any other error is raised)."""
        waits = self._attempts()
        while True:
            try:
                await action()
                return
            except Exception as exc:
                step = waits.after_failure(exc)
                if step.then is not Then.WAIT:
                    raise
                self.stage_metrics.outage_waits.inc()
                ctx.log.warning(
                    "dependency_unavailable", error=describe(exc), wait_s=round(step.delay_s, 2), while_=doing
                )
                await asyncio.sleep(step.delay_s)

    async def release(self, partitions: set[TopicPartition]) -> None:
        """Drain in-flight records of these partitions and commit them (revocation/shutdown)."""
        tasks = [t for t, tp in self._tasks.items() if tp in partitions]
        if tasks:
            self.log.info("draining", in_flight=len(tasks))
            _, still = await asyncio.wait(tasks, timeout=self.settings.drain_timeout_s)
            for task in still:
                task.cancel()  # uncommitted: redelivered to the next owner
        await self._commit(partitions)
        for tp in partitions:
            self._offsets.pop(tp, None)
            self._start_offsets.pop(tp, None)
        self.stage_metrics.forget_partitions(self.group_id, ((tp.topic, tp.partition) for tp in partitions))

    async def _commit(self, partitions: set[TopicPartition] | None = None) -> None:
        """Commit what is safe to commit.

        1. Per partition, the safe offset is the first record not yet finished
           (``PartitionOffsets``); a record is finished only after every output it produced
           was acknowledged by the broker (``acks=all``) and its Redis effects were written,
           or after its dead letter was acknowledged.
        2. Commit those offsets in one request, bounded by ``commit_timeout_s`` so SIGTERM
           never hangs on a coordinator that went away.
        3. If the commit fails (rebalance in progress, broker blip), keep going: the
           records are redelivered to whoever owns the partition next, never skipped.
        4. Only an acknowledged commit moves ``PartitionOffsets.committed``.
        """
        consumer = self._consumer
        if consumer is None:
            return
        offsets = {
            tp: off
            for tp, po in self._offsets.items()
            if (partitions is None or tp in partitions) and (off := po.to_commit()) is not None
        }
        if not offsets:
            return
        try:
            await asyncio.wait_for(consumer.commit(offsets), self.settings.commit_timeout_s)
        except (CommitFailedError, KafkaError, TimeoutError) as exc:
            self.log.warning("commit_failed", error=str(exc))
            return
        for tp, off in offsets.items():
            if tp in self._offsets:
                self._offsets[tp].mark_committed(off)
        self.stage_metrics.commits.inc()

    async def _report_lag(self) -> None:
        """Set the lag gauge of every owned partition: high watermark minus committed offset.

        The committed offset is this loop's last acknowledged commit; before its first one, the
        group's committed offset when the partition was assigned (or the log start, for a group
        that never committed), asked of the broker once per assignment.
        """
        consumer = self._consumer
        now = time.monotonic()
        if consumer is None or now - self._lag_at < self.settings.lag_interval_s:
            return
        self._lag_at = now
        lags: list[tuple[str, int, int]] = []
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is None:  # nothing fetched yet: the watermark is unknown
                continue
            committed = self._offsets[tp].committed if tp in self._offsets else None
            if committed is None:
                committed = await self._start_offset(tp)
            if committed is None:
                continue
            lags.append((tp.topic, tp.partition, highwater - committed))
        self.stage_metrics.set_lag(self.group_id, lags)

    async def _start_offset(self, tp: TopicPartition) -> int | None:
        if tp not in self._start_offsets:
            consumer = self._consumer
            assert consumer is not None
            try:
                committed = await consumer.committed(tp)
                if committed is None:
                    committed = (await consumer.beginning_offsets([tp]))[tp]
            except KafkaError as exc:
                self.log.debug("lag_unknown", partition=tp.partition, error=str(exc))
                return None
            self._start_offsets[tp] = committed
        return self._start_offsets[tp]

    async def _shutdown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._consumer is not None:
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()
        await self.stage.close()
        m = self.metrics
        self.log.info(
            "stage_stopped",
            records=m.records,
            outputs=m.outputs,
            retries=m.retries,
            outage_waits=m.outage_waits,
            dead_letters=m.dead_letters,
            commits=m.commits,
            pauses=m.pauses,
            uptime_s=round(time.monotonic() - self._started_at, 1),
        )


def _record_time(timestamp_ms: int | None) -> datetime | None:
    """The record's timestamp, or None when a producer wrote something that is not epoch ms."""
    try:
        return datetime.fromtimestamp(timestamp_ms / 1000, UTC) if timestamp_ms else None
    except (ValueError, OverflowError, OSError):
        return None
