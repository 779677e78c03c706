"""Caption input modes, side by side: a segment's frames as one Qwen3-VL video or as images.

``python -m loadtest.caption_input_bench [--segments 12] [--rounds 3] [--json OUT]``

The tiny Qwen3-VL (random weights, Qwen3-VL-4B-Instruct's processor limits) on CPU, in
process, the offline profile's engine. Both modes caption the same frames in one run: the
modes alternate in every round (which goes first flips each round, so neither always meets a
warm machine), and every round draws fresh frames, since vLLM caches prefixes and multimodal
inputs and a repeat would flatter whichever mode ran second. Segments look like the decoder's
output under its defaults: 8 frames at 2 fps, sized by the visual-token budget (``frame_pixels``
of ``DecodeSettings()``), at absolute times well past 0 s.

Per mode:
- prompt and visual tokens per segment (counted in the prompt the engine saw);
- engine segments/s: all segments' chat messages submitted at once to the backend;
- caption stage segments/s: the stage's own work per record (parse the segment JSON, check
  the frames, build the request, caption, serialize the Caption), all records at once;
- timestamps: video mode's ``<t seconds>`` markers must equal the frames' absolute times
  (Qwen3-VL's per-patch mean), or the run fails.

The machine's load average is printed: the figures are only comparable within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import structlog
from redis.asyncio import Redis

from loadtest.fresh_frames import fresh_frame
from schemas.segments import SegmentBatch
from workers.caption.backend import VllmCaptionBackend
from workers.caption.prompt import CaptionInput, build_caption_messages
from workers.caption.stage import CaptionStage
from workers.decode.frames import target_size
from workers.decode.sampling import frame_pixels
from workers.decode.stage import segment_policy
from workers.offline_profile import offline_env
from workers.runtime.stage import RecordContext
from workers.settings import CaptionSettings, DecodeSettings

MODES: tuple[CaptionInput, ...] = ("video", "images")
SOURCE = (1280, 720)
TIMESTAMP = re.compile(r"<(\d+\.\d) seconds>")


@dataclass
class ModeRun:
    mode: str
    round: int
    prompt_tokens: float
    visual_tokens: float
    engine_segments_per_s: float
    stage_segments_per_s: float
    timestamps_ok: bool


def jittered_segments(seed: int, count: int, frames: int, fps: float, size: tuple[int, int]) -> list[SegmentBatch]:
    """``count`` segments of fresh frames, at absolute times past 100 s jittered off round values."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        start = 100.0 + i * frames / fps + rng.uniform(0, 0.3)
        pts = [round(start + k / fps + rng.uniform(0, 0.04), 6) for k in range(frames)]
        shown = [fresh_frame(rng, k, t, size, 85) for k, t in enumerate(pts)]
        out.append(
            SegmentBatch(
                object_id=f"bench-{seed}",
                segment_id=f"bench-{seed}-{i}",
                segment_index=i,
                source_uri="bench:",
                media_kind="video",
                start_s=round(start, 6),
                end_s=round(start + frames / fps, 6),
                reason="window",
                frames=shown,
            )
        )
    return out


def patch_times(segment: SegmentBatch) -> list[str]:
    pts = [round(f.pts_s * 1000) / 1000 for f in segment.frames]  # the metadata's 1 kHz clock
    if len(pts) % 2:
        pts.append(pts[-1])
    return [f"{(a + b) / 2:.1f}" for a, b in zip(pts[::2], pts[1::2], strict=True)]


async def run_mode(
    backend: VllmCaptionBackend, settings: CaptionSettings, mode: CaptionInput, segments: list[SegmentBatch], tok: Any
) -> tuple[float, float, float, float, bool]:
    half = len(segments) // 2
    engine_part, stage_part = segments[:half], segments[half:]
    messages = [build_caption_messages(s, settings.caption_prompt, mode) for s in engine_part]
    started = time.perf_counter()
    results = await asyncio.gather(*(backend.caption(m) for m in messages))
    engine_rate = len(engine_part) / (time.perf_counter() - started)
    ok = True
    for segment, result in zip(engine_part, results, strict=True):
        if mode == "video":
            prompt = tok.decode(list(result.prompt_token_ids or ()))
            ok = ok and TIMESTAMP.findall(prompt) == patch_times(segment)

    stage = CaptionStage(settings.model_copy(update={"caption_input": mode}), Redis(), backend)
    records = [s.model_dump_json().encode() for s in stage_part]
    log = structlog.get_logger("bench")

    async def one(i: int, value: bytes) -> bytes:
        item = SegmentBatch.model_validate_json(value)
        ctx = RecordContext(topic="bench", partition=0, offset=i, key=None, value=value, attempt=1, log=log)
        caption = await stage.run_model(item, ctx, log)
        return caption.model_dump_json().encode()

    started = time.perf_counter()
    await asyncio.gather(*(one(i, v) for i, v in enumerate(records)))
    stage_rate = len(stage_part) / (time.perf_counter() - started)
    prompt_tokens = statistics.mean(r.prompt_tokens or 0 for r in results)
    visual_tokens = statistics.mean(r.visual_tokens or 0 for r in results)
    return prompt_tokens, visual_tokens, engine_rate, stage_rate, ok


async def bench(segments: int, rounds: int) -> list[ModeRun]:
    os.environ.update(offline_env())
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    settings = CaptionSettings(caption_max_batch=max(16, segments))
    policy = segment_policy(DecodeSettings())
    size = target_size(*SOURCE, frame_pixels(policy))
    frames = policy.max_frames
    backend = VllmCaptionBackend(settings)
    await backend.start()
    tok = backend._llm.get_tokenizer()
    runs: list[ModeRun] = []
    try:
        warm = jittered_segments(0, 2, frames, policy.sample_fps, size)
        for mode in MODES:  # first requests pay one-off costs (processor load, compile)
            await asyncio.gather(*(backend.caption(build_caption_messages(s, "Describe.", mode)) for s in warm))
        for r in range(rounds):
            order = MODES if r % 2 == 0 else MODES[::-1]
            for mode in order:
                batch = jittered_segments(
                    1000 * (r + 1) + MODES.index(mode), 2 * segments, frames, policy.sample_fps, size
                )
                figures = await run_mode(backend, settings, mode, batch, tok)
                runs.append(ModeRun(mode, r, *figures))
                print(f"round {r} {mode:6s} " + " ".join(f"{v:.2f}" for v in figures[:4]), file=sys.stderr)
    finally:
        await backend.close()
    return runs


def table(runs: list[ModeRun], frames_size: str) -> str:
    def med(mode: str, field: str) -> float:
        return statistics.median(getattr(r, field) for r in runs if r.mode == mode)

    rows = [
        "| input | prompt tokens / segment | visual tokens / segment | engine segments/s | stage segments/s |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for mode in MODES:
        rows.append(
            f"| {mode} | {med(mode, 'prompt_tokens'):.0f} | {med(mode, 'visual_tokens'):.0f} "
            f"| {med(mode, 'engine_segments_per_s'):.2f} | {med(mode, 'stage_segments_per_s'):.2f} |"
        )
    ratio = {
        f: med("images", f) / med("video", f) if "tokens" in f else med("video", f) / med("images", f)
        for f in ("prompt_tokens", "visual_tokens", "engine_segments_per_s", "stage_segments_per_s")
    }
    rows.append(
        f"| video vs images | {ratio['prompt_tokens']:.2f}x fewer | {ratio['visual_tokens']:.2f}x fewer "
        f"| {ratio['engine_segments_per_s']:.2f}x | {ratio['stage_segments_per_s']:.2f}x |"
    )
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    rounds = max(r.round for r in runs) + 1
    rows.append("")
    rows.append(
        f"Medians of {rounds} interleaved rounds; frames {frames_size}; "
        f"absolute timestamps intact in every video round: {all(r.timestamps_ok for r in runs if r.mode == 'video')}; "
        f"load average after the run (1/5/15 min): {load} on {os.cpu_count()} CPUs."
    )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--segments", type=int, default=12, help="segments per mode per round, per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="also write the per-round figures here")
    args = parser.parse_args(argv)
    print(f"load average before: {' / '.join(f'{x:.1f}' for x in os.getloadavg())}", file=sys.stderr)
    runs = asyncio.run(bench(args.segments, args.rounds))
    policy = segment_policy(DecodeSettings())
    w, h = target_size(*SOURCE, frame_pixels(policy))
    print(table(runs, f"{policy.max_frames} x {w}x{h} at {policy.sample_fps:g} fps"))
    if args.json:
        with open(args.json, "w") as out:
            json.dump([asdict(r) for r in runs], out, indent=2)
    return 0 if all(r.timestamps_ok for r in runs if r.mode == "video") else 1


if __name__ == "__main__":
    sys.exit(main())
