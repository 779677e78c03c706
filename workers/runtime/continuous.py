"""Feed a stepped engine continuously: requests join the running batch as they arrive.

vLLM schedules per engine step (one token for every running sequence), so a request can join
or leave between any two steps. Handing the engine one blocking ``LLM.chat`` call at a time
wastes that: each call lasts as long as its longest request, and what arrives meanwhile waits
for the whole call. ``loadtest/engine_bench.py`` measures it on CPU with the tiny Qwen3-VL
(half the captions 16 tokens, half 256, four arriving every 0.2 s): batch-at-a-time took
longer, its short captions waited much longer, and fewer sequences ran per step. The figures
and the load they were measured under are in docs/batching.md (3.21x the time and 10.4x the
short captions' wait on a heavily loaded machine; 1.62x the time on a quieter one, for issue
11). So the batcher adds each request to the engine when it arrives, runs one engine step
per hop to the engine thread, and resolves a request the step it finishes.

The engine thread: vLLM keeps per-process global state (forward context, parallel groups), so
every engine of a process runs on ONE thread (``engine_thread``), shared by the caption and
embed engines of ``capstream run``. Each hop is one step, so two engines on the thread take
turns step by step, and the event loop (Kafka heartbeats) never runs engine code.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

import structlog

from workers.runtime.errors import FatalWorkerError

Req = TypeVar("Req")
Res = TypeVar("Res")
ReqIn = TypeVar("ReqIn", contravariant=True)
ResOut = TypeVar("ResOut", covariant=True)

OnStep = Callable[[int], None]  # hears how many requests each engine step ran

log = structlog.get_logger("capstream.engine")


def engine_thread(name: str = "vllm-engine") -> ThreadPoolExecutor:
    """The executor every in-process engine of a worker process runs on."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)


class SteppedEngine(Protocol[ReqIn, ResOut]):
    """An engine driven one step at a time; every method runs on the engine thread."""

    def add(self, request_id: str, request: ReqIn) -> None:
        """Admit a request (raises when the engine refuses this input, e.g. it cannot render it)."""

    def step(self) -> Sequence[tuple[str, ResOut | Exception]]:
        """Run one step of everything admitted; the requests that finished in it, each with its
        result or its own error. Raises when the step as a whole failed."""

    def abort(self, request_ids: Sequence[str]) -> None:
        """Drop requests from the engine, freeing their slots."""


@dataclass
class _Slot(Generic[Req, Res]):
    request: Req
    future: asyncio.Future[Res]


@dataclass
class _StepReport:
    rejected: dict[str, Exception] = field(default_factory=dict)  # refused at add: each one's own fault
    finished: Sequence[tuple[str, object]] = ()
    error: Exception | None = None  # the step itself failed: culprit unknown
    in_engine: int = 0  # requests the step ran (0: no step ran)


class ContinuousBatcher(Generic[Req, Res]):
    """Continuous batching for a stepped engine, telling a bad input from a broken engine.

    Isolation: a request the engine refuses at ``add`` or fails in its own result has failed
    alone. A step that fails as a whole fails every request in it, culprit unknown: they are
    aborted and re-run one at a time with nothing else in the engine (new requests wait), so
    a poison input fails alone and the others get their results.

    A request that fails alone is either the input's fault or the engine's, and only the
    engine can say which: the batcher runs a known-good request (the probe), namely the last
    request that succeeded on this engine or, before any has, the caller's ``canary`` (a tiny
    input a healthy engine always completes). The probe is one more request, only after a
    failure, and failures that happen while one is pending share it.

    - Probe succeeds: the engine works, the input is at fault. The request gets its own error
      (the loop retries it, then dead-letters it) and the engine-failure count resets, so no
      number of poison inputs, in any order, adds up to "engine broken".
    - Probe fails, or there is no probe (nothing succeeded yet and no canary): an engine
      failure. ``max_consecutive_failures`` of them with no success between mean the engine is
      broken: the request gets FatalWorkerError (so does each further failure until a success),
      the worker stops without committing, and its supervisor restarts it with a fresh engine
      while the uncommitted records wait in Kafka. Counting when there is no probe keeps an
      engine that is broken from the start from dead-lettering every record; the canary keeps
      poison at the head of a restarted worker's partitions from looking like that.

    A request whose caller stops waiting (its timeout) is aborted in the engine at the next
    step, so it stops holding a slot. ``on_step`` is told how many requests each step ran.
    """

    def __init__(
        self,
        engine: SteppedEngine[Req, Res],
        executor: Executor,
        max_running: int,
        max_consecutive_failures: int = 3,
        canary: Req | None = None,
        on_step: OnStep | None = None,
    ) -> None:
        self._engine = engine
        self._executor = executor
        self._max_running = max_running
        self._max_consecutive_failures = max_consecutive_failures
        self._canary = canary
        self._on_step = on_step
        self._engine_failures = 0
        # Proven on this engine, so a probe with it can only fail if the engine does.
        self._known_good: tuple[Req] | None = None
        self._probe: asyncio.Task[bool] | None = None
        self._waiting: deque[_Slot[Req, Res]] = deque()  # submitted, not yet in the engine
        self._arrived = asyncio.Event()
        self._running: dict[str, _Slot[Req, Res]] = {}  # in the engine, by request id
        self._suspects: deque[_Slot[Req, Res]] = deque()  # in a failed step: re-run one at a time
        self._isolating = False  # the engine holds one suspect, alone
        self._ids = itertools.count()
        self._server: asyncio.Task[None] | None = None

    async def submit(self, request: Req) -> Res:
        try:
            result = await self._attempt(request)
        except Exception as exc:
            if await self._engine_works():
                self._engine_failures = 0  # the input's fault: retried and dead-lettered by the loop
                raise
            self._engine_failures += 1
            if self._engine_failures >= self._max_consecutive_failures:
                raise FatalWorkerError(
                    f"engine failed {self._engine_failures} requests in a row and no known-good one between: {exc!r}"
                ) from exc
            raise
        self._succeeded(request)
        return result

    async def _attempt(self, request: Req) -> Res:
        """The request's result from the engine, or its own failure (no blame assigned)."""
        if self._server is None or self._server.done():
            self._server = asyncio.create_task(self._serve(), name="continuous-batcher")
        future: asyncio.Future[Res] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Slot(request, future))
        self._arrived.set()
        return await future  # cancelling the caller cancels this future: the loop aborts the request

    def _succeeded(self, request: Req) -> None:
        self._engine_failures = 0
        self._known_good = (request,)

    async def _engine_works(self) -> bool:
        """Run the probe (or join the pending one); False when it fails or there is none."""
        if self._probe is None or self._probe.done():
            if self._known_good is not None:
                probe = self._known_good[0]
            elif self._canary is not None:
                probe = self._canary
            else:
                return False
            self._probe = asyncio.create_task(self._run_probe(probe), name="engine-probe")
        return await asyncio.shield(self._probe)  # a waiter's timeout must not cancel the shared probe

    async def _run_probe(self, probe: Req) -> bool:
        try:
            await self._attempt(probe)
        except Exception:
            return False
        self._succeeded(probe)
        return True

    async def _serve(self) -> None:
        try:
            while True:
                await self._serve_step()
        except Exception as exc:  # a bug here must not leave callers waiting for their timeouts
            log.exception("batcher_failed", error=repr(exc))
            self._fail_all(exc)  # the next submit starts a fresh loop

    async def _serve_step(self) -> None:
        while not (self._running or self._suspects or self._waiting):
            self._arrived.clear()
            await self._arrived.wait()
        aborts = [rid for rid, slot in self._running.items() if slot.future.done()]
        for rid in aborts:
            del self._running[rid]
        alone = self._isolating or bool(self._suspects)
        if alone and not self._running:  # the engine is empty: the next suspect, alone
            adds = self._admit_suspect()
            alone = bool(adds)
        else:
            adds = {} if alone else self._admit_waiting()
        self._isolating = alone
        if not (adds or aborts or self._running):
            return
        report = await asyncio.get_running_loop().run_in_executor(
            self._executor,
            self._engine_step,
            [(rid, slot.request) for rid, slot in adds.items()],
            aborts,
            list(self._running),
        )
        for rid, slot in adds.items():
            if rid in report.rejected:
                _settle(slot, report.rejected[rid])
            else:
                self._running[rid] = slot
        if report.in_engine and self._on_step is not None:
            self._on_step(report.in_engine)
        if report.error is not None:
            self._step_failed(report.error)
            return
        for rid, outcome in report.finished:
            finished = self._running.pop(rid, None)
            if finished is not None:
                _settle(finished, outcome)

    def _admit_waiting(self) -> dict[str, _Slot[Req, Res]]:
        adds: dict[str, _Slot[Req, Res]] = {}
        while len(self._running) + len(adds) < self._max_running and self._waiting:
            slot = self._waiting.popleft()
            if not slot.future.done():  # its caller already gave up
                adds[str(next(self._ids))] = slot
        return adds

    def _admit_suspect(self) -> dict[str, _Slot[Req, Res]]:
        """The next suspect, once the engine is empty: it runs alone."""
        while not self._running and self._suspects:
            slot = self._suspects.popleft()
            if not slot.future.done():
                return {str(next(self._ids)): slot}
        return {}

    def _step_failed(self, error: Exception) -> None:
        if self._isolating:  # it ran alone: its own failure
            for slot in self._running.values():
                _settle(slot, error)
        else:
            log.warning("engine_step_failed", requests=len(self._running), error=repr(error))
            self._suspects.extend(self._running.values())
        self._running.clear()
        self._isolating = False

    def _engine_step(self, adds: list[tuple[str, Req]], aborts: list[str], running: list[str]) -> _StepReport:
        """On the engine thread: drop abandoned requests, admit new ones, run one step."""
        engine = self._engine
        if aborts:
            engine.abort(aborts)
        report = _StepReport()
        for rid, request in adds:
            try:
                engine.add(rid, request)
            except Exception as exc:
                report.rejected[rid] = exc
        in_engine = running + [rid for rid, _ in adds if rid not in report.rejected]
        if not in_engine:
            return report
        report.in_engine = len(in_engine)
        try:
            report.finished = engine.step()
        except Exception as exc:
            report.error = exc
            try:
                engine.abort(in_engine)  # they are re-run alone, or have failed
            except Exception as abort_exc:
                log.warning("engine_abort_failed", error=repr(abort_exc))
        return report

    def _fail_all(self, error: Exception) -> None:
        slots = [*self._running.values(), *self._suspects, *self._waiting]
        self._running.clear()
        self._suspects.clear()
        self._waiting.clear()
        self._isolating = False
        for slot in slots:
            _settle(slot, error)

    async def close(self) -> None:
        for task in (self._server, self._probe):
            if task is not None:
                task.cancel()
        self._fail_all(RuntimeError("engine closed"))


def _settle(slot: _Slot[Req, Res], outcome: object) -> None:
    if slot.future.done():
        return
    if isinstance(outcome, Exception):
        slot.future.set_exception(outcome)
    else:
        slot.future.set_result(outcome)  # type: ignore[arg-type]  # the engine's result for this request
