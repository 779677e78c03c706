"""The in-process engines against batch-at-a-time and against bare vLLM, in one run.

    python -m loadtest.engine_bench [--rounds 3] [--waves 10] [--segments 24] [--texts 256] [--only a,b,c] [--out FILE]

One process, the offline CPU profile (tiny random Qwen3-VL, all-MiniLM-L6-v2), both engines
on one engine thread as in ``capstream run``. Each round runs every configuration once,
interleaved (the machine is shared and noisy), each with FRESH frames or texts: vLLM's
prefix cache makes repeated media nearly free. Three comparisons:

(a) Continuous batching vs batch-at-a-time. Captions of mixed length (half 16 tokens, half
    256, exact: ``min_tokens`` = ``max_tokens``), four requests arriving every 0.2 s, one
    frame each. "batch" is the old micro-batcher, kept here only as the baseline: one blocking
    ``LLM.chat`` of whatever is queued (up to ``max_batch``) at a time. "continuous" is the
    shipped ``VllmBackend``/``ContinuousBatcher``. Reported: total time (first arrival to last
    result), p50 wait of the short and the long requests (submit to result), and the mean
    number of requests in the engine per ``llm_engine.step()``.
(b) The caption backend alone vs ``LLM.chat`` of the same segments' messages in one call on
    the same engine (so the same engine args): segments/s, ratio = backend / bare.
(c) The embed backend vs ``LLM.embed`` of the same texts in one call: texts/s, ratio.

Prints a table and writes JSON. Not a test: the figures depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from loadtest.fresh_frames import fresh_frame
from schemas.segments import SegmentBatch
from workers.caption.backend import CaptionResult, VllmCaptionBackend
from workers.caption.prompt import ChatMessages, build_caption_messages
from workers.embed.backend import VllmEmbedBackend
from workers.offline_profile import offline_env
from workers.runtime.continuous import engine_thread
from workers.runtime.logging import configure_logging
from workers.settings import CaptionSettings, EmbedSettings

SHORT, LONG = 16, 256  # caption tokens of the mixed-length pattern
WAVE, WAVE_GAP_S = 4, 0.2  # four requests every 0.2 s
FRAME = (448, 252)  # a 16:9 frame within the decode stage's 448*448 pixel budget
WORDS = "cat dog sofa rocket launch beach wave city night street car bird tree snow kitchen".split()

MixedRequest = tuple[ChatMessages, int]  # messages, exact caption length in tokens


def fresh_segment(rng: random.Random, index: int, frames: int) -> SegmentBatch:
    return SegmentBatch(
        object_id=f"bench-{rng.random()}",
        segment_id=f"seg-{index}",
        segment_index=index,
        source_uri="bench:",
        media_kind="video" if frames > 1 else "image",
        start_s=float(index),
        end_s=float(index + frames),
        reason="window",
        frames=[fresh_frame(rng, i, float(index + i), FRAME, 85) for i in range(frames)],
    )


def fresh_texts(rng: random.Random, n: int) -> list[str]:
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 24))) + f" {rng.random()}" for _ in range(n)]


class StepCounter:
    """Wraps ``llm_engine.step`` to record how many requests each step holds (both modes alike)."""

    def __init__(self, llm: Any) -> None:
        self.sizes: list[int] = []
        engine = llm.llm_engine
        step = engine.step

        def counted_step() -> Any:
            self.sizes.append(engine.get_num_unfinished_requests())
            return step()

        engine.step = counted_step

    def take(self) -> list[int]:
        sizes, self.sizes = self.sizes, []
        return sizes


class MixedLengthCaptioner(VllmCaptionBackend):
    """The shipped caption backend; a request may also carry its own exact caption length."""

    def _render(self, request: ChatMessages | MixedRequest) -> tuple[Any, Any]:
        if isinstance(request, tuple):
            messages, tokens = request
            prompt, _ = super()._render(messages)
            return prompt, exact_length(tokens)
        return super()._render(request)


def exact_length(tokens: int) -> Any:
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    return SamplingParams(
        max_tokens=tokens, min_tokens=tokens, ignore_eos=True, temperature=0.0, output_kind=RequestOutputKind.FINAL_ONLY
    )


class BatchAtATime:
    """The old micro-batcher's batching (the baseline): one blocking ``LLM.chat`` of whatever
    is queued, up to ``max_batch``, at a time on the engine thread; what arrives meanwhile
    waits for the whole call."""

    def __init__(self, llm: Any, executor: Executor, max_batch: int) -> None:
        self._llm = llm
        self._executor = executor
        self._max_batch = max_batch
        self._queue: asyncio.Queue[tuple[MixedRequest, asyncio.Future[str]]] = asyncio.Queue()
        self._server: asyncio.Task[None] | None = None

    async def submit(self, request: MixedRequest) -> str:
        if self._server is None:
            self._server = asyncio.create_task(self._serve())
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((request, future))
        return await future

    async def _serve(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            messages = [m for (m, _), _ in batch]
            params = [exact_length(t) for (_, t), _ in batch]
            outputs = await asyncio.get_running_loop().run_in_executor(
                self._executor, partial(self._llm.chat, messages, params, use_tqdm=False)
            )
            for (_, future), out in zip(batch, outputs, strict=True):
                future.set_result(out.outputs[0].text)

    async def close(self) -> None:
        if self._server is not None:
            self._server.cancel()


@dataclass
class Run:
    comparison: str
    mode: str
    round: int
    wall_s: float
    items: int
    items_per_s: float
    mean_in_engine_per_step: float
    steps: int
    short_p50_wait_s: float | None = None
    long_p50_wait_s: float | None = None


async def mixed_arrivals(submit: Callable[[MixedRequest], Any], rng: random.Random, waves: int) -> dict[str, Any]:
    """Four requests (two short, two long) every 0.2 s; per-length waits and the total time."""
    waits: dict[int, list[float]] = {SHORT: [], LONG: []}
    requests = []
    for wave in range(waves):
        for i in range(WAVE):
            segment = fresh_segment(rng, wave * WAVE + i, 1)
            requests.append((build_caption_messages(segment, "Describe the picture."), SHORT if i % 2 else LONG))

    async def one(request: MixedRequest) -> None:
        started = time.perf_counter()
        await submit(request)
        waits[request[1]].append(time.perf_counter() - started)

    started = time.perf_counter()
    tasks = []
    for wave in range(waves):
        tasks += [asyncio.create_task(one(r)) for r in requests[wave * WAVE : (wave + 1) * WAVE]]
        await asyncio.sleep(max(0.0, started + (wave + 1) * WAVE_GAP_S - time.perf_counter()))
    await asyncio.gather(*tasks)
    return {
        "wall_s": time.perf_counter() - started,
        "items": len(requests),
        "short_p50": statistics.median(waits[SHORT]),
        "long_p50": statistics.median(waits[LONG]),
    }


def _run(comparison: str, mode: str, rnd: int, wall_s: float, items: int, sizes: Sequence[int], **kw: Any) -> Run:
    return Run(
        comparison,
        mode,
        rnd,
        round(wall_s, 3),
        items,
        round(items / wall_s, 2),
        round(statistics.fmean(sizes), 2) if sizes else 0.0,
        len(sizes),
        **kw,
    )


@dataclass
class Bench:
    captioner: MixedLengthCaptioner
    embedder: VllmEmbedBackend
    executor: Executor
    caption_steps: StepCounter
    embed_steps: StepCounter
    runs: list[Run] = field(default_factory=list)

    async def continuous_vs_batch(self, rnd: int, waves: int, order: Sequence[str]) -> None:
        for mode in order:
            rng = random.Random(f"a-{rnd}-{mode}")
            if mode == "batch":
                baseline = BatchAtATime(self.captioner._llm, self.executor, self.captioner.serving.max_batch)
                result = await mixed_arrivals(baseline.submit, rng, waves)
                await baseline.close()
            else:
                result = await mixed_arrivals(self.captioner._submit, rng, waves)
            self.runs.append(
                _run(
                    "a: mixed lengths",
                    mode,
                    rnd,
                    result["wall_s"],
                    result["items"],
                    self.caption_steps.take(),
                    short_p50_wait_s=round(result["short_p50"], 3),
                    long_p50_wait_s=round(result["long_p50"], 3),
                )
            )

    async def caption_vs_bare(self, rnd: int, segments: int, order: Sequence[str]) -> None:
        llm, sampling = self.captioner._llm, self.captioner._sampling
        instruction = CaptionSettings().caption_prompt
        for mode in order:
            rng = random.Random(f"b-{rnd}-{mode}")
            messages = [build_caption_messages(fresh_segment(rng, i, 3), instruction) for i in range(segments)]
            started = time.perf_counter()
            if mode == "bare":
                await asyncio.get_running_loop().run_in_executor(
                    self.executor, partial(llm.chat, messages, sampling, use_tqdm=False)
                )
            else:
                results: list[CaptionResult] = await asyncio.gather(*(self.captioner.caption(m) for m in messages))
                assert len(results) == segments
            wall = time.perf_counter() - started
            self.runs.append(_run("b: caption", mode, rnd, wall, segments, self.caption_steps.take()))

    async def embed_vs_bare(self, rnd: int, texts: int, order: Sequence[str]) -> None:
        llm = self.embedder._llm
        for mode in order:
            batch = fresh_texts(random.Random(f"c-{rnd}-{mode}"), texts)
            started = time.perf_counter()
            if mode == "bare":
                await asyncio.get_running_loop().run_in_executor(
                    self.executor, partial(llm.embed, batch, use_tqdm=False)
                )
            else:
                await asyncio.gather(*(self.embedder.embed(t) for t in batch))
            wall = time.perf_counter() - started
            self.runs.append(_run("c: embed", mode, rnd, wall, texts, self.embed_steps.take()))


def summarize(runs: list[Run]) -> dict[str, Any]:
    """Medians over the rounds, and the ratios the README quotes (of the comparisons run)."""

    def median(comparison: str, mode: str, attr: str) -> float:
        return statistics.median(
            getattr(r, attr) for r in runs if r.comparison.startswith(comparison) and r.mode == mode
        )

    def ratio(comparison: str, attr: str, top: str, bottom: str) -> float:
        return round(median(comparison, top, attr) / median(comparison, bottom, attr), 2)

    ran = {r.comparison[0] for r in runs}
    both = ("batch", "continuous")
    summary: dict[str, Any] = {}
    if "a" in ran:
        summary |= {
            "a_batch_over_continuous_time": ratio("a", "wall_s", "batch", "continuous"),
            "a_short_wait_batch_over_continuous": ratio("a", "short_p50_wait_s", "batch", "continuous"),
            "a_short_p50_wait_s": {m: median("a", m, "short_p50_wait_s") for m in both},
            "a_long_p50_wait_s": {m: median("a", m, "long_p50_wait_s") for m in both},
            "a_mean_in_engine_per_step": {m: median("a", m, "mean_in_engine_per_step") for m in both},
        }
    if "b" in ran:
        summary["b_backend_over_bare_segments_per_s"] = ratio("b", "items_per_s", "backend", "bare")
    if "c" in ran:
        summary["c_backend_over_bare_texts_per_s"] = ratio("c", "items_per_s", "backend", "bare")
    return summary


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    executor = engine_thread()
    # No request timeouts: on a loaded machine a 256-token caption can outlast the stage's.
    captioner = MixedLengthCaptioner(CaptionSettings(caption_request_timeout_s=3600), executor)
    embedder = VllmEmbedBackend(EmbedSettings(embed_request_timeout_s=3600), executor)
    await captioner.start()
    await embedder.start()
    try:
        bench = Bench(captioner, embedder, executor, StepCounter(captioner._llm), StepCounter(embedder._llm))
        only = set(args.only.split(","))
        for rnd in range(-1, args.rounds):  # round -1 warms up and is not reported
            flip = slice(None, None, -1 if rnd % 2 else 1)  # alternate which mode goes first
            if "a" in only:
                await bench.continuous_vs_batch(rnd, args.waves if rnd >= 0 else 2, ("batch", "continuous")[flip])
            if "b" in only:
                await bench.caption_vs_bare(rnd, args.segments if rnd >= 0 else 4, ("bare", "backend")[flip])
            if "c" in only:
                await bench.embed_vs_bare(rnd, args.texts if rnd >= 0 else 16, ("bare", "backend")[flip])
            if rnd < 0:
                bench.runs.clear()
                continue
            sys.stdout.write(f"round {rnd + 1}/{args.rounds} done\n")
            sys.stdout.flush()
        return {"runs": [asdict(r) for r in bench.runs], "summary": summarize(bench.runs)}
    finally:
        await captioner.close()
        await embedder.close()
        executor.shutdown(wait=True)


def print_table(report: dict[str, Any]) -> None:
    cols = ["comparison", "mode", "round", "wall_s", "items_per_s", "mean_in_engine_per_step", "steps"]
    cols += ["short_p50_wait_s", "long_p50_wait_s"]
    lines = [" | ".join(cols)]
    for run in report["runs"]:
        lines.append(" | ".join("" if run[c] is None else str(run[c]) for c in cols))
    lines.append(json.dumps(report["summary"], indent=2))
    sys.stdout.write("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--waves", type=int, default=10, help="(a): waves of four requests, 0.2 s apart")
    parser.add_argument("--segments", type=int, default=24, help="(b): segments of three frames per run")
    parser.add_argument("--texts", type=int, default=256, help="(c): captions embedded per run")
    parser.add_argument("--only", default="a,b,c", help="comparisons to run, e.g. a,c")
    parser.add_argument("--out", type=Path, default=Path("engine_bench.json"))
    args = parser.parse_args()
    for key, value in offline_env().items():
        os.environ.setdefault(key, value)
    configure_logging(level="WARNING", fmt="console")
    report = asyncio.run(main_async(args))
    print_table(report)
    args.out.write_text(json.dumps(report, indent=2))
    sys.stdout.write(f"wrote {args.out}\n")


if __name__ == "__main__":
    main()
