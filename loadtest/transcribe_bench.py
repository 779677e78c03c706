"""The transcribe stage against the bare engine on the same speech, faster-whisper and pocketsphinx beside.

    python -m loadtest.transcribe_bench [--chunks 24] [--rounds 3] [--no-faster-whisper] [--json FILE]

One process, the offline profile with the tiny random Whisper (``offline_whisper_env``: the
worker's code path, junk words). Every round draws fresh speech chunks (espeak-ng sentences of
drawn pitch and pace, 16 kHz FLAC as the decode stage publishes them) and runs, in alternating
order:

- **stage**: ``TranscribeStage.run_model`` with the worker's backend (``make_transcribe_backend``,
  the in-process vLLM engine and its continuous batcher), every chunk at once under the
  worker's ``CAPSTREAM_TRANSCRIBE_MAX_IN_FLIGHT``, as the consumer loop hands them over;
- **bare**: ``vllm.LLM.generate`` of the same chunks on the same engine (so the same engine
  arguments), with prompts and sampling written here from the worker's settings
  (``bare_side``): encoder audio, decoder ``<|startoftranscript|><|lang|><|transcribe|><|0.00|>``,
  greedy, ``CAPSTREAM_TRANSCRIBE_MAX_TOKENS``, and at most ``CAPSTREAM_TRANSCRIBE_MAX_BATCH``
  chunks in the engine at once (calls of that many): the ratio's baseline. **bare one call**
  gives it every chunk in one call (no batch cap), reported beside. Before anything is timed the stage's backend is
  asked what it actually renders and samples with (``observed_stage_side``), and the run stops
  if the two sides differ (``differences``);
- **faster-whisper**: the same weights converted with CTranslate2's transformers converter
  (float32, CPU), ``WhisperModel.transcribe`` per chunk with the same language, greedy,
  the same token cap, no VAD and no fallback thresholds (its segment parser drops the random
  model's out-of-range timestamps, so it reports no tokens);
- **ctranslate2**: the same converted model's ``generate`` on every chunk's features at once with
  the bare side's decoder prompt and cap: faster-whisper's engine doing the bare side's work;
- **pocketsphinx**: the offline profile's recognizer (``PocketsphinxBackend``, its process pool),
  every chunk at once: a reference for what the demo's transcribe stage costs.

Each side hears the same sentences but its own faint noise (-60 dBFS, seeded per side and
round): the same length and the same speech, yet no input any cache has seen (vLLM's encoder
and prefix caches would make a repeat cheap, see docs/benchmarks.md). The figure is
audio-seconds transcribed per wall-second; the ratio stage / bare is the stage's overhead
(goal >= 0.95). With a ~0.5 M-parameter random model the engine's work is tiny, so the
figures measure overhead and fixed costs, not Whisper's speed or quality.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from loadtest.fresh_frames import fresh_speech
from loadtest.media_factory import resampled
from schemas.ids import speech_segment_id
from schemas.speech import SPEECH_SAMPLE_RATE, SpeechChunk
from workers.settings import TranscribeSettings

Samples = npt.NDArray[np.float32]
GOAL = 0.95
NOISE_DBFS = -60.0
SIDES = ("stage", "bare", "bare one call")


# -- what each side does (pure) ------------------------------------------------------------
@dataclass(frozen=True)
class Side:
    """What one side asks of the engine for each chunk: the two sides must ask the same."""

    model: str
    language: str | None
    decoder_prompt: str
    max_tokens: int
    temperature: float
    max_batch: int  # requests in the engine at once (the worker's CAPSTREAM_TRANSCRIBE_MAX_BATCH)
    audio: tuple[str, ...]  # per chunk: digest of the speech (before the side's own noise) and its length


def worker_language(settings: TranscribeSettings, chunk: SpeechChunk) -> str | None:
    """The language the stage transcribes ``chunk`` in (``TranscribeStage.run_model``)."""
    from workers.transcribe.language import whisper_language

    return settings.transcribe_language or whisper_language(chunk.language_hint)


def decoder_prompt(language: str) -> str:
    """The decoder prompt vLLM's server writes for ``verbose_json`` (timestamps on)."""
    return f"<|startoftranscript|><|{language}|><|transcribe|><|0.00|>"


def audio_ids(speech: Sequence[Samples]) -> tuple[str, ...]:
    return tuple(f"{hashlib.sha256(s.tobytes()).hexdigest()[:16]}:{s.size}" for s in speech)


def bare_side(settings: TranscribeSettings, chunks: Sequence[SpeechChunk], speech: Sequence[Samples]) -> Side:
    """What the bare engine is given, from the worker's settings: its model, the language the
    stage would pick, the decoder prompt, the token cap, greedy decoding, the same speech."""
    languages = {worker_language(settings, c) for c in chunks}
    if len(languages) != 1 or None in languages:
        raise ValueError(f"the bench transcribes in one given language (CAPSTREAM_TRANSCRIBE_LANGUAGE): {languages}")
    language = languages.pop()
    assert language is not None
    return settings_side(settings, language, audio_ids(speech))


def settings_side(settings: TranscribeSettings, language: str, audio: tuple[str, ...] = ()) -> Side:
    """The requests the worker's settings make in ``language``: its model, the verbose_json
    decoder prompt, its token cap, greedy, its batch cap."""
    return Side(
        model=settings.transcribe_model,
        language=language,
        decoder_prompt=decoder_prompt(language),
        max_tokens=settings.transcribe_max_tokens,
        temperature=0.0,
        max_batch=settings.transcribe_max_batch,
        audio=audio,
    )


def differences(stage: Side, bare: Side) -> list[str]:
    """Where the two sides would not do the same work; empty when they would."""
    return [
        f"{name}: stage {getattr(stage, name)!r} != bare {getattr(bare, name)!r}"
        for name in Side.__dataclass_fields__
        if getattr(stage, name) != getattr(bare, name)
    ]


def with_noise(speech: Samples, seed: int) -> Samples:
    """``speech`` plus seeded noise at NOISE_DBFS: the same speech, bytes no cache has seen."""
    noise = np.random.default_rng(seed).normal(0.0, 10 ** (NOISE_DBFS / 20), speech.size)
    return np.clip(speech + noise, -1.0, 1.0).astype(np.float32)


def ratio(stage: float, bare: float) -> float:
    return stage / bare if bare > 0 else float("nan")


@dataclass
class Run:
    side: str
    round: int
    chunks: int
    audio_s: float
    wall_s: float
    tokens: int | None = None  # completion tokens, where the side tells

    @property
    def audio_s_per_s(self) -> float:
        return self.audio_s / self.wall_s if self.wall_s > 0 else 0.0


@dataclass
class Summary:
    figures: dict[str, float] = field(default_factory=dict)  # side -> median audio-s/s
    tokens: dict[str, float] = field(default_factory=dict)  # side -> median completion tokens per chunk
    stage_vs_bare: float = float("nan")
    stage_vs_one_call: float = float("nan")  # against every chunk in one generate (no batch cap)

    @property
    def meets_goal(self) -> bool:
        return self.stage_vs_bare >= GOAL


def summarize(runs: Sequence[Run]) -> Summary:
    out = Summary()
    for side in dict.fromkeys(r.side for r in runs):
        mine = [r for r in runs if r.side == side]
        out.figures[side] = statistics.median(r.audio_s_per_s for r in mine)
        counted = [r.tokens / r.chunks for r in mine if r.tokens is not None and r.chunks]
        if counted:
            out.tokens[side] = statistics.median(counted)
    # Per round (same sentences, same machine moment), then the median of the rounds.
    rounds = sorted({r.round for r in runs})
    per_round = [
        ratio(_one(runs, "stage", n).audio_s_per_s, _one(runs, "bare", n).audio_s_per_s)
        for n in rounds
        if _has(runs, "stage", n) and _has(runs, "bare", n)
    ]
    out.stage_vs_bare = statistics.median(per_round) if per_round else float("nan")
    one_call = [
        ratio(_one(runs, "stage", n).audio_s_per_s, _one(runs, "bare one call", n).audio_s_per_s)
        for n in rounds
        if _has(runs, "stage", n) and _has(runs, "bare one call", n)
    ]
    out.stage_vs_one_call = statistics.median(one_call) if one_call else float("nan")
    return out


def _has(runs: Sequence[Run], side: str, n: int) -> bool:
    return any(r.side == side and r.round == n for r in runs)


def _one(runs: Sequence[Run], side: str, n: int) -> Run:
    return next(r for r in runs if r.side == side and r.round == n)


def format_summary(s: Summary, chunks: int, audio_s: float) -> str:
    lines = [f"transcribe_bench: {chunks} fresh speech chunks a round ({audio_s:.1f} audio s), medians over rounds"]
    for side, value in s.figures.items():
        tokens = f", {s.tokens[side]:.1f} tokens/chunk" if side in s.tokens else ""
        lines.append(f"  {side:<15} {value:8.2f} audio-s/s{tokens}")
    verdict = "meets" if s.meets_goal else "MISSES"
    lines.append(f"  stage / bare    {s.stage_vs_bare:8.3f}x  ({verdict} the goal >= {GOAL}x)")
    if s.stage_vs_one_call == s.stage_vs_one_call:  # not NaN
        lines.append(
            f"  stage / bare one call {s.stage_vs_one_call:6.3f}x  (the bare engine without the worker's batch cap)"
        )
    lines.append("  tiny random Whisper: the figures measure overhead, not Whisper's speed or quality")
    return "\n".join(lines)


# -- speech ---------------------------------------------------------------------------------
def fresh_chunks(rng: random.Random, n: int) -> tuple[list[SpeechChunk], list[Samples]]:
    """``n`` speech chunks of fresh sentences (16 kHz mono, FLAC) and their samples."""
    from workers.transcribe.backend import encode_speech

    object_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    chunks, speech = [], []
    start = 0.0
    for i in range(n):
        voice = fresh_speech(rng, 0.0)
        samples = resampled(voice.samples, voice.rate, SPEECH_SAMPLE_RATE)
        end = start + samples.size / SPEECH_SAMPLE_RATE
        chunks.append(
            SpeechChunk(
                object_id=object_id,
                segment_id=speech_segment_id(object_id, i),
                segment_index=i,
                source_uri=f"file:///bench/{object_id}.mp4",
                start_s=start,
                end_s=end,
                flac=encode_speech(samples),
            )
        )
        speech.append(samples)
        start = end + 1.0
    return chunks, speech


def noisy_chunks(chunks: Sequence[SpeechChunk], speech: Sequence[Samples], seed: int) -> list[SpeechChunk]:
    from workers.transcribe.backend import encode_speech

    return [
        c.model_copy(update={"flac": encode_speech(with_noise(s, seed * 10_000 + i))})
        for i, (c, s) in enumerate(zip(chunks, speech, strict=True))
    ]


def audio_seconds(chunks: Sequence[SpeechChunk]) -> float:
    return sum(c.end_s - c.start_s for c in chunks)


# -- the sides (engines) --------------------------------------------------------------------
def observed_stage_side(backend: Any, speech: Sequence[Samples], language: str) -> Side:
    """What the worker's loaded backend really renders and samples with (asked, not assumed)."""
    from workers.transcribe.whisper import WhisperRequest

    engine_input, sampling = backend._render(WhisperRequest(speech[0], language))
    tokenizer = backend._llm.get_tokenizer()
    decoder = engine_input.get("decoder_prompt", engine_input)
    ids = decoder.get("prompt_token_ids") if isinstance(decoder, dict) else None
    prompt = tokenizer.decode(ids) if ids else str(decoder.get("prompt", ""))
    return Side(
        model=backend.serving.model,
        language=language,
        decoder_prompt=prompt,
        max_tokens=int(sampling.max_tokens),
        temperature=float(sampling.temperature),
        max_batch=int(backend._batcher._max_running),
        audio=audio_ids(speech),
    )


def bare_sampling(llm: Any, side: Side) -> Any:
    """Greedy, ``side.max_tokens`` capped by the model (its 448 decoder positions), over the
    model's generation defaults: what vLLM's server samples a transcription with."""
    from vllm import SamplingParams

    model_config = llm.model_config
    defaults = model_config.get_diff_sampling_param()
    cap = min(side.max_tokens, model_config.max_model_len, defaults.pop("max_tokens", 1 << 30))
    return SamplingParams.from_optional(**{**defaults, "temperature": side.temperature, "max_tokens": cap})


def bare_prompts(side: Side, speech: Sequence[Samples]) -> list[dict[str, Any]]:
    return [
        {
            "encoder_prompt": {"prompt": "", "multi_modal_data": {"audio": (s, SPEECH_SAMPLE_RATE)}},
            "decoder_prompt": side.decoder_prompt,
        }
        for s in speech
    ]


def bare_decoded_side(llm: Any, side: Side, speech: Sequence[Samples]) -> Side:
    """The bare side as the engine will see it: its prompt tokenized and decoded back, its
    sampling's real cap."""
    tokenizer = llm.get_tokenizer()
    ids = tokenizer.encode(side.decoder_prompt, add_special_tokens=False)
    sampling = bare_sampling(llm, side)
    return Side(
        side.model,
        side.language,
        tokenizer.decode(ids),
        int(sampling.max_tokens),
        float(sampling.temperature),
        side.max_batch,
        audio_ids(speech),
    )


class TokenCount:
    """Completion tokens of the backend's finished engine requests (its ``_result`` wrapped)."""

    def __init__(self, backend: Any) -> None:
        self.tokens = 0
        inner = backend._result

        def counted(output: Any, latency_s: float) -> Any:
            self.tokens += len(output.outputs[0].token_ids)
            return inner(output, latency_s)

        backend._result = counted

    def take(self) -> int:
        tokens, self.tokens = self.tokens, 0
        return tokens


async def run_stage(stage: Any, chunks: Sequence[SpeechChunk], max_in_flight: int, rnd: int) -> Run:
    import structlog

    from workers.runtime.stage import RecordContext

    log = structlog.get_logger("transcribe_bench")
    gate = asyncio.Semaphore(max_in_flight)

    async def one(i: int, chunk: SpeechChunk) -> None:
        async with gate:
            ctx = RecordContext("media.speech", 0, i, chunk.object_id, b"", 1, log)
            await stage.run_model(chunk, ctx, log)

    started = time.perf_counter()
    await asyncio.gather(*(one(i, c) for i, c in enumerate(chunks)))
    wall = time.perf_counter() - started
    counter: TokenCount | None = getattr(stage, "bench_tokens", None)
    return Run("stage", rnd, len(chunks), audio_seconds(chunks), wall, counter.take() if counter else None)


async def run_bare(backend: Any, side: Side, chunks: Sequence[SpeechChunk], rnd: int, one_call: bool = False) -> Run:
    """``LLM.generate`` on the stage's engine thread (idle now): in calls of ``side.max_batch``
    chunks (the worker never has more in the engine), or every chunk in ``one_call``."""
    from workers.transcribe.backend import decode_speech

    llm = backend._llm
    step = len(chunks) if one_call else side.max_batch

    def generate() -> tuple[float, int]:
        started = time.perf_counter()
        speech = [decode_speech(c.flac) for c in chunks]  # the same FLAC in, as the stage decodes it
        tokens = 0
        for at in range(0, len(speech), step):
            outputs = llm.generate(bare_prompts(side, speech[at : at + step]), bare_sampling(llm, side), use_tqdm=False)
            tokens += sum(len(o.outputs[0].token_ids) for o in outputs)
        return time.perf_counter() - started, tokens

    wall, tokens = await asyncio.get_running_loop().run_in_executor(backend._executor, generate)
    return Run("bare one call" if one_call else "bare", rnd, len(chunks), audio_seconds(chunks), wall, tokens)


def convert_for_ctranslate2(model_dir: Path, out_dir: Path) -> Path:
    """The same weights as a CTranslate2 model (float32), with the tokenizer faster-whisper reads."""
    if (out_dir / "model.bin").exists():
        return out_dir
    from ctranslate2.converters import TransformersConverter

    copy = [f for f in ("tokenizer.json", "preprocessor_config.json") if (model_dir / f).exists()]
    TransformersConverter(str(model_dir), copy_files=copy).convert(str(out_dir), quantization="float32", force=True)
    return out_dir


def run_faster_whisper(model: Any, side: Side, chunks: Sequence[SpeechChunk], rnd: int) -> Run:
    from workers.transcribe.backend import decode_speech

    started = time.perf_counter()
    tokens = 0
    for chunk in chunks:
        segments, _ = model.transcribe(
            decode_speech(chunk.flac),
            language=side.language,
            task="transcribe",
            beam_size=1,
            temperature=side.temperature,
            max_new_tokens=side.max_tokens,
            without_timestamps=False,
            vad_filter=False,
            condition_on_previous_text=False,
            compression_ratio_threshold=None,
            log_prob_threshold=None,
            no_speech_threshold=None,
        )
        tokens += sum(len(s.tokens) for s in segments)  # the generator runs the model
    return Run("faster-whisper", rnd, len(chunks), audio_seconds(chunks), time.perf_counter() - started, tokens)


def run_ctranslate2(model: Any, side: Side, chunks: Sequence[SpeechChunk], rnd: int) -> Run:
    """CTranslate2 itself, the bare side's twin: every chunk's features in one batch, the same
    decoder prompt, greedy, the same token cap, one ``generate`` (faster-whisper's engine)."""
    import ctranslate2
    from faster_whisper.audio import pad_or_trim

    from workers.transcribe.backend import decode_speech

    started = time.perf_counter()
    features = np.stack([pad_or_trim(model.feature_extractor(decode_speech(c.flac))) for c in chunks])
    encoded = model.model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(features)), to_cpu=False)
    prompt = model.hf_tokenizer.encode(side.decoder_prompt, add_special_tokens=False).ids
    results = model.model.generate(
        encoded,
        [prompt] * len(chunks),
        beam_size=1,
        max_length=len(prompt) + side.max_tokens,
        suppress_blank=False,
        suppress_tokens=[],
    )
    tokens = sum(len(r.sequences_ids[0]) for r in results)
    return Run("ctranslate2", rnd, len(chunks), audio_seconds(chunks), time.perf_counter() - started, tokens)


async def run_pocketsphinx(backend: Any, chunks: Sequence[SpeechChunk], rnd: int) -> Run:
    started = time.perf_counter()
    await asyncio.gather(*(backend.transcribe(c.flac, "en") for c in chunks))
    return Run("pocketsphinx", rnd, len(chunks), audio_seconds(chunks), time.perf_counter() - started)


# -- command --------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.transcribe_bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--chunks", type=int, default=24, help="speech chunks a round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--no-faster-whisper", action="store_true", help="skip faster-whisper (not installed)")
    parser.add_argument("--no-pocketsphinx", action="store_true")
    parser.add_argument("--json", type=Path, help="also write every run and the summary here")
    return parser.parse_args(argv)


def _settings() -> tuple[TranscribeSettings, TranscribeSettings]:
    """The worker's settings under the offline Whisper profile (language given: one request a
    chunk), and the pocketsphinx profile's."""
    from workers.offline_profile import offline_env, offline_whisper_env

    for key, value in offline_whisper_env().items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("CAPSTREAM_TRANSCRIBE_LANGUAGE", "en")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")  # a CPU warning per engine step otherwise
    sphinx = {k.removeprefix("CAPSTREAM_").lower(): v for k, v in offline_env().items() if "TRANSCRIBE" in k}
    return TranscribeSettings(), TranscribeSettings.model_validate(sphinx)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    from redis.asyncio import Redis

    from workers.transcribe.backend import make_transcribe_backend
    from workers.transcribe.stage import TranscribeStage

    settings, sphinx_settings = _settings()
    rng = random.Random(args.seed)
    backend: Any = make_transcribe_backend(settings)  # its engine (`_llm`, `_render`) is read below
    await backend.start()
    stage = TranscribeStage(settings, Redis(), backend)  # run_model never touches Redis
    stage.bench_tokens = TokenCount(backend)  # type: ignore[attr-defined]
    fw_model = None
    if not args.no_faster_whisper:
        from faster_whisper import WhisperModel

        ct2_dir = convert_for_ctranslate2(Path(settings.transcribe_model), Path(settings.transcribe_model + "-ct2"))
        fw_model = WhisperModel(str(ct2_dir), device="cpu", compute_type="float32", cpu_threads=os.cpu_count() or 1)
    sphinx = None
    if not args.no_pocketsphinx:
        sphinx = make_transcribe_backend(sphinx_settings)
        await sphinx.start()
    runs: list[Run] = []
    checked: list[str] = []
    try:
        warm, warm_speech = fresh_chunks(rng, 2)
        await run_stage(stage, warm, settings.transcribe_max_in_flight, -1)
        for n in range(args.rounds):
            chunks, speech = fresh_chunks(rng, args.chunks)
            bare = bare_side(settings, chunks, speech)
            observed = observed_stage_side(backend, speech, bare.language or "en")
            problems = differences(observed, bare_decoded_side(backend._llm, bare, speech))
            if problems:
                raise SystemExit("transcribe_bench: the two sides would not do the same work: " + "; ".join(problems))
            checked.append(f"round {n}: same model, language, decoder prompt, max_tokens, temperature, audio")
            order = SIDES if n % 2 == 0 else SIDES[::-1]
            for side in order:
                mine = noisy_chunks(chunks, speech, seed=n * 10 + SIDES.index(side) + 1)
                if side == "stage":
                    runs.append(await run_stage(stage, mine, settings.transcribe_max_in_flight, n))
                else:
                    runs.append(await run_bare(backend, bare, mine, n, one_call=side == "bare one call"))
                _progress(runs[-1])
            if fw_model is not None:
                runs.append(run_faster_whisper(fw_model, bare, noisy_chunks(chunks, speech, seed=n * 10 + 6), n))
                _progress(runs[-1])
                runs.append(run_ctranslate2(fw_model, bare, noisy_chunks(chunks, speech, seed=n * 10 + 7), n))
                _progress(runs[-1])
            if sphinx is not None:
                runs.append(await run_pocketsphinx(sphinx, noisy_chunks(chunks, speech, seed=n * 10 + 8), n))
                _progress(runs[-1])
    finally:
        await backend.close()
        if sphinx is not None:
            await sphinx.close()
    summary = summarize(runs)
    audio_s = statistics.median(r.audio_s for r in runs if r.side == "stage")
    print(format_summary(summary, args.chunks, audio_s))
    return {
        "model": settings.transcribe_model,
        "max_tokens": settings.transcribe_max_tokens,
        "max_in_flight": settings.transcribe_max_in_flight,
        "checked": checked,
        "runs": [asdict(r) | {"audio_s_per_s": r.audio_s_per_s} for r in runs],
        "audio_s_per_s": summary.figures,
        "tokens_per_chunk": summary.tokens,
        "stage_vs_bare": summary.stage_vs_bare,
        "stage_vs_bare_one_call": summary.stage_vs_one_call,
        "goal": GOAL,
        "cores": os.cpu_count(),
    }


def _progress(run: Run) -> None:
    tokens = f" tokens={run.tokens}" if run.tokens is not None else ""
    print(
        f"  round {run.round} {run.side:<15} {run.audio_s:6.1f} audio s in {run.wall_s:6.2f} s: "
        f"{run.audio_s_per_s:7.2f} audio-s/s{tokens}",
        file=sys.stderr,
    )


def main(argv: Sequence[str] | None = None) -> int:
    from workers.runtime.logging import configure_logging

    args = parse_args(argv)
    configure_logging("WARNING", "console")
    report = asyncio.run(main_async(args))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
