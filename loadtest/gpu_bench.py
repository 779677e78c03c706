"""How many GPUs and decode cores a workload needs: the real models, in-process, on one GPU.

    python -m loadtest.gpu_bench [--segments N] [--texts N] [--chunks N] [--media FILE ...] [--json FILE]
    python -m loadtest.gpu_bench --allow-cpu      # no GPU: the same steps with the tiny CPU models

It decodes the media (the shipped samples unless ``--media`` names yours) with the decode
worker's own code and settings, timing its CPU; shapes a caption load of N segments from the
decoded ones, each with fresh frames (vLLM's prefix and multimodal caches would make repeated
frames nearly free); captions them all at once through ``vllm.LLM.chat`` with the messages and
engine arguments the caption worker uses (``CAPSTREAM_CAPTION_*``, so a deployment's
``CAPSTREAM_CAPTION_ENGINE_ARGS`` are measured as deployed); then embeds N synthetic
caption-length texts the same way (``CAPSTREAM_EMBED_*``); then transcribes N speech chunks,
shaped from the ones the decode worker cut from the media's audio, each with its own faint
noise (fresh audio: an encoder cache would make a repeat cheap), through ``vllm.LLM.generate``
with the transcribe worker's engine arguments, prompt and token cap (``CAPSTREAM_TRANSCRIBE_*``;
``loadtest.transcribe_bench`` builds those requests and checks them against the worker's).
It prints:

- captioned segments/s and video-seconds/s per GPU (divided by the engine's
  ``tensor_parallel_size``);
- visual tokens per segment (the image/video placeholder tokens of each prompt);
- embedded texts/s per GPU;
- transcribed audio-seconds/s per GPU (Whisper; the language is ``CAPSTREAM_TRANSCRIBE_LANGUAGE``,
  English when unset: one request per chunk, no detection);
- peak GPU memory (device-wide, from NVML or CUDA) and peak host RSS (the engines' processes);
- the decode CPU cores that keep one GPU fed: segments/s per GPU x decode CPU-seconds per
  segment of this media.

The engine runs with all requests queued at once: the GPU's capacity, the figure to size on.
Defaults on a GPU: Qwen/Qwen3-VL-4B-Instruct, Qwen/Qwen3-Embedding-0.6B (``--embed-model
Qwen/Qwen3-Embedding-8B`` for the large one) and openai/whisper-large-v3-turbo. Without a CUDA
GPU it refuses, unless ``--allow-cpu``: then the offline profile's tiny random Qwen3-VL, MiniLM
and tiny random Whisper run the same steps,
which tests the bench, not the hardware (its figures size nothing).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import resource
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import psutil

from loadtest.fresh_frames import freshened
from loadtest.transcribe_bench import Side, bare_prompts, bare_sampling, settings_side, with_noise
from schemas.segments import Frame, SegmentBatch
from workers.caption.backend import VllmCaptionBackend
from workers.caption.prompt import build_caption_messages
from workers.decode.dispatch import decode_segments
from workers.decode.policy import SegmentPolicy
from workers.decode.speech import DecodedSpeech
from workers.decode.stage import segment_policy
from workers.embed.backend import VllmEmbedBackend
from workers.engine_version import VLLM_VERSION, installed_vllm_version
from workers.runtime.engine_args import engine_kwargs
from workers.runtime.logging import configure_logging
from workers.samples import sample_paths
from workers.settings import CaptionSettings, DecodeSettings, EmbedSettings, TranscribeSettings

GPU_CAPTION_MODEL = "Qwen/Qwen3-VL-4B-Instruct"
GPU_EMBED_MODEL = "Qwen/Qwen3-Embedding-0.6B"
GPU_TRANSCRIBE_MODEL = "openai/whisper-large-v3-turbo"
# Qwen3-VL's placeholders: one token per visual patch group in the prompt.
VISUAL_PAD_TOKENS = ("<|image_pad|>", "<|video_pad|>")
NO_GPU = (
    "gpu_bench: no CUDA GPU here (torch.cuda.is_available() is False); run it on a machine with "
    "an NVIDIA GPU, or pass --allow-cpu to run its steps with the tiny CPU models (their figures size nothing)"
)
# Words for synthetic captions: the embed load is text of a caption's length, never repeated.
_WORDS = (
    "a person walks across the room while a dog follows them toward the open door and the camera "
    "pans left over a red car parked beside green trees under a cloudy sky as text appears on "
    "screen showing a price list with two columns and a small logo in the corner"
).split()


# -- load shaping (pure) --------------------------------------------------------------------
@dataclass(frozen=True)
class DecodeCost:
    """The decode worker's CPU on the bench's media, per segment and per video second."""

    segments: int
    video_s: float
    cpu_s: float

    @property
    def cpu_s_per_segment(self) -> float:
        return self.cpu_s / self.segments if self.segments else 0.0

    @property
    def video_s_per_cpu_s(self) -> float:
        return self.video_s / self.cpu_s if self.cpu_s > 0 else 0.0


def video_seconds(segment: SegmentBatch) -> float:
    return 0.0 if segment.media_kind == "image" else max(segment.end_s - segment.start_s, 0.0)


def decode_media(
    paths: Sequence[Path], policy: SegmentPolicy, speech: list[DecodedSpeech] | None = None
) -> tuple[list[SegmentBatch], DecodeCost]:
    """Every segment of ``paths`` as the decode worker cuts it, and the CPU that took."""
    segments: list[SegmentBatch] = []
    cpu = _cpu_s()
    for path in paths:
        for seg in decode_segments(str(path), policy):
            if isinstance(seg, DecodedSpeech):
                if speech is not None:  # the audio's decode is in the CPU cost; its chunks feed Whisper
                    speech.append(seg)
                continue
            kind: Literal["image", "video"] = "image" if seg.end_s == 0.0 and len(seg.frames) == 1 else "video"
            segments.append(
                SegmentBatch(
                    object_id=path.stem,
                    segment_id=f"{path.stem}-{seg.index}",
                    segment_index=seg.index,
                    source_uri=f"file://{path}",
                    media_kind=kind,
                    start_s=seg.start_s,
                    end_s=seg.end_s,
                    reason=seg.reason,
                    frames=[
                        Frame(index=f.index, pts_s=f.pts_s, width=f.width, height=f.height, jpeg=f.jpeg)
                        for f in seg.frames
                    ],
                )
            )  # fmt: skip
    cost = DecodeCost(len(segments), sum(video_seconds(s) for s in segments), _cpu_s() - cpu)
    return segments, cost


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # FFmpeg's decoder threads included
    return usage.ru_utime + usage.ru_stime


def shape_caption_load(samples: Sequence[SegmentBatch], count: int, first: int = 0) -> list[SegmentBatch]:
    """Segments ``first`` .. ``first + count - 1`` of a load cycling through ``samples`` (so the
    mix of media kinds and lengths is theirs), each with frames no other segment has."""
    if not samples:
        raise ValueError("no segments to shape a load from")
    load = []
    for i in range(first, first + count):
        base = samples[i % len(samples)]
        rng = random.Random(i)
        frames = [freshened(f, rng) for f in base.frames]
        load.append(base.model_copy(update={"segment_id": f"bench-{i}", "frames": frames}))
    return load


def shape_transcribe_load(speech: Sequence[DecodedSpeech], count: int, first: int = 0) -> list[np.ndarray]:
    """Chunks ``first`` .. ``first + count - 1`` of a load cycling through the decoded ``speech``
    (16 kHz mono float32), each with its own faint noise: the same speech, audio no other has."""
    from workers.transcribe.backend import decode_speech

    if not speech:
        raise ValueError("no speech chunks to shape a load from")
    decoded = [decode_speech(chunk.flac) for chunk in speech]
    return [with_noise(decoded[i % len(decoded)], seed=i) for i in range(first, first + count)]


def synthetic_captions(count: int, words: int = 40) -> list[str]:
    """Caption-length texts (a 4B model's captions run one or two sentences), all different."""
    return [
        f"Segment {i}: " + " ".join(_WORDS[(i * 7 + k * 3) % len(_WORDS)] for k in range(words)) + "."
        for i in range(count)
    ]


def visual_tokens(prompt_token_ids: Sequence[int], pad_ids: set[int]) -> int:
    return sum(1 for t in prompt_token_ids if t in pad_ids)


# -- report (pure) --------------------------------------------------------------------------
@dataclass(frozen=True)
class CaptionRun:
    segments: int
    video_s: float
    wall_s: float
    visual_tokens: list[int]
    prompt_tokens: list[int]
    completion_tokens: list[int]


@dataclass(frozen=True)
class EmbedRun:
    texts: int
    wall_s: float
    dim: int


@dataclass(frozen=True)
class TranscribeRun:
    chunks: int
    audio_s: float
    wall_s: float
    completion_tokens: list[int]


@dataclass(frozen=True)
class Report:
    device: str
    vllm: str
    gpus: int  # per engine (tensor parallel size)
    caption_model: str
    embed_model: str
    media: list[str]
    segments: int
    video_s: float
    segments_per_s_per_gpu: float
    video_s_per_s_per_gpu: float
    visual_tokens_per_segment: float
    prompt_tokens_per_segment: float
    completion_tokens_per_segment: float
    texts: int
    embed_dim: int
    texts_per_s_per_gpu: float
    peak_gpu_memory_bytes: int | None
    peak_host_rss_bytes: int
    decode_cpu_s_per_segment: float
    decode_video_s_per_cpu_s: float
    decode_cores_per_gpu: float
    transcribe_model: str | None = None  # None: no speech in the media, nothing transcribed
    transcribe_gpus: int = 1
    chunks: int = 0
    audio_s: float = 0.0
    audio_s_per_s_per_gpu: float = 0.0
    transcribe_tokens_per_chunk: float = 0.0


def _mean(values: Sequence[int]) -> float:
    return sum(values) / len(values) if values else 0.0


def build_report(
    *,
    device: str,
    gpus: int,
    caption_model: str,
    embed_model: str,
    media: Sequence[Path],
    caption: CaptionRun,
    embed: EmbedRun,
    decode: DecodeCost,
    peak_gpu_memory_bytes: int | None,
    peak_host_rss_bytes: int,
    transcribe: TranscribeRun | None = None,
    transcribe_model: str | None = None,
    transcribe_gpus: int = 1,
) -> Report:
    segments_per_s = caption.segments / caption.wall_s / gpus
    speech: dict[str, Any] = {}
    if transcribe is not None:
        speech = {
            "transcribe_model": transcribe_model,
            "transcribe_gpus": transcribe_gpus,
            "chunks": transcribe.chunks,
            "audio_s": round(transcribe.audio_s, 2),
            "audio_s_per_s_per_gpu": transcribe.audio_s / transcribe.wall_s / transcribe_gpus,
            "transcribe_tokens_per_chunk": _mean(transcribe.completion_tokens),
        }
    return Report(
        device=device,
        vllm=installed_vllm_version() or "?",
        gpus=gpus,
        caption_model=caption_model,
        embed_model=embed_model,
        media=[p.name for p in media],
        segments=caption.segments,
        video_s=round(caption.video_s, 2),
        segments_per_s_per_gpu=segments_per_s,
        video_s_per_s_per_gpu=caption.video_s / caption.wall_s / gpus,
        visual_tokens_per_segment=_mean(caption.visual_tokens),
        prompt_tokens_per_segment=_mean(caption.prompt_tokens),
        completion_tokens_per_segment=_mean(caption.completion_tokens),
        texts=embed.texts,
        embed_dim=embed.dim,
        texts_per_s_per_gpu=embed.texts / embed.wall_s / gpus,
        peak_gpu_memory_bytes=peak_gpu_memory_bytes,
        peak_host_rss_bytes=peak_host_rss_bytes,
        decode_cpu_s_per_segment=decode.cpu_s_per_segment,
        decode_video_s_per_cpu_s=decode.video_s_per_cpu_s,
        # A GPU captions segments_per_s; each took this much decode CPU to cut and encode.
        decode_cores_per_gpu=segments_per_s * decode.cpu_s_per_segment,
        **speech,
    )


def _gib(n: int | None) -> str:
    return "n/a (no GPU)" if n is None else f"{n / 1024**3:.2f} GiB"


def format_report(r: Report) -> str:
    per = "per GPU" if r.peak_gpu_memory_bytes is not None else "on CPU (tiny models: sizes nothing)"
    return "\n".join(
        [
            f"gpu_bench: vLLM {r.vllm} (tested {VLLM_VERSION}) on {r.device}"
            + (f", {r.gpus} GPU(s) per engine" if r.peak_gpu_memory_bytes is not None else ""),
            f"  caption model: {r.caption_model}   embed model: {r.embed_model}",
            f"  load: {r.segments} segments ({r.video_s:.1f} video s) with fresh frames, shaped from "
            f"{', '.join(r.media)}; {r.texts} texts",
            f"  captioned segments/s {per}: {r.segments_per_s_per_gpu:.2f}",
            f"  video-seconds/s {per}: {r.video_s_per_s_per_gpu:.2f}",
            f"  visual tokens per segment: {r.visual_tokens_per_segment:.1f} "
            f"(prompt {r.prompt_tokens_per_segment:.1f}, completion {r.completion_tokens_per_segment:.1f})",
            f"  embedded texts/s {per}: {r.texts_per_s_per_gpu:.1f} (dim {r.embed_dim})",
            (
                f"  transcribed audio-seconds/s {per}: {r.audio_s_per_s_per_gpu:.1f} ({r.transcribe_model}; "
                f"{r.chunks} speech chunks, {r.audio_s:.1f} audio s, {r.transcribe_tokens_per_chunk:.1f} tokens each)"
                if r.transcribe_model is not None
                else "  transcribed audio-seconds/s: not measured (no speech in the media)"
            ),
            f"  peak GPU memory: {_gib(r.peak_gpu_memory_bytes)}   peak host RSS: {_gib(r.peak_host_rss_bytes)}",
            f"  decode: {r.decode_cpu_s_per_segment * 1000:.1f} CPU-ms per segment "
            f"({r.decode_video_s_per_cpu_s:.1f} video s per CPU-s) -> "
            f"{r.decode_cores_per_gpu:.2f} decode cores keep one GPU fed",
        ]
    )


# -- measuring (engines) --------------------------------------------------------------------
def cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


class PeakSampler:
    """Peak GPU memory (device-wide) and peak RSS of this process and its children (vLLM's
    engine core runs in a child on GPUs), sampled every ``interval_s`` on a thread."""

    def __init__(self, gpu: bool, interval_s: float = 0.2) -> None:
        self._gpu_used = _gpu_memory_reader() if gpu else None
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-sampler", daemon=True)
        self.peak_gpu: int | None = 0 if gpu else None
        self.peak_rss = 0

    def _sample(self) -> None:
        me = psutil.Process()
        rss = 0
        for proc in [me, *me.children(recursive=True)]:
            try:
                rss += proc.memory_info().rss
            except psutil.Error:
                continue  # a child that just exited
        self.peak_rss = max(self.peak_rss, rss)
        if self._gpu_used is not None and self.peak_gpu is not None:
            self.peak_gpu = max(self.peak_gpu, self._gpu_used())

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._sample()

    def __enter__(self) -> PeakSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def _gpu_memory_reader() -> Callable[[], int]:
    """Used bytes of the first visible GPU: NVML where installed (no CUDA context in this
    process), else CUDA's own count."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip()
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(int(visible) if visible.isdigit() else 0)
        return lambda: int(pynvml.nvmlDeviceGetMemoryInfo(handle).used)
    except (ImportError, Exception):  # noqa: B014 - NVML missing or unusable: fall back
        import torch

        def used() -> int:
            free, total = torch.cuda.mem_get_info()
            return int(total - free)

        return used


def _llm(model: str, kwargs: dict[str, Any]) -> Any:
    from vllm import LLM

    return LLM(model=model, **kwargs)


def _release(llm: Any) -> None:
    """Shut the engine down before the next one starts (its GPU memory, its child process)."""
    shutdown = getattr(getattr(llm, "llm_engine", None), "shutdown", None)
    if callable(shutdown):
        shutdown()
    del llm
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def caption_engine_kwargs(settings: CaptionSettings) -> dict[str, Any]:
    """What the caption worker's in-process engine is built with (its defaults, then
    CAPSTREAM_CAPTION_ENGINE_ARGS)."""
    with ThreadPoolExecutor(1) as executor:
        defaults = VllmCaptionBackend(settings, executor).engine_defaults()
    return engine_kwargs(settings.caption_engine_args, defaults)


def embed_engine_kwargs(settings: EmbedSettings) -> dict[str, Any]:
    with ThreadPoolExecutor(1) as executor:
        defaults = VllmEmbedBackend(settings, executor).engine_defaults()
    return engine_kwargs(settings.embed_engine_args, defaults)


def transcribe_engine_kwargs(settings: TranscribeSettings) -> dict[str, Any]:
    """What the transcribe worker's in-process Whisper engine is built with."""
    from workers.transcribe.whisper import VllmWhisperBackend

    with ThreadPoolExecutor(1) as executor:
        defaults = VllmWhisperBackend(settings, executor).engine_defaults()
    return engine_kwargs(settings.transcribe_engine_args, defaults)


def transcribe_side(settings: TranscribeSettings) -> Side:
    """The requests the worker sends its engine: its language (English when none is set), the
    verbose_json decoder prompt, greedy, its token cap."""
    return settings_side(settings, settings.transcribe_language or "en")


def run_transcribe(
    settings: TranscribeSettings, load: Sequence[np.ndarray], warmup: Sequence[np.ndarray]
) -> TranscribeRun:
    from schemas.speech import SPEECH_SAMPLE_RATE

    side = transcribe_side(settings)
    llm = _llm(settings.transcribe_model, transcribe_engine_kwargs(settings))
    try:
        sampling = bare_sampling(llm, side)
        llm.generate(bare_prompts(side, warmup), sampling, use_tqdm=False)
        started = time.perf_counter()
        outputs = llm.generate(bare_prompts(side, load), sampling, use_tqdm=False)
        wall = time.perf_counter() - started
    finally:
        _release(llm)
    return TranscribeRun(
        chunks=len(load),
        audio_s=sum(a.size for a in load) / SPEECH_SAMPLE_RATE,
        wall_s=wall,
        completion_tokens=[len(o.outputs[0].token_ids) for o in outputs],
    )


def run_caption(settings: CaptionSettings, load: Sequence[SegmentBatch], warmup: Sequence[SegmentBatch]) -> CaptionRun:
    from vllm import SamplingParams

    llm = _llm(settings.caption_model, caption_engine_kwargs(settings))
    try:
        tokenizer = llm.get_tokenizer()
        ids = (tokenizer.convert_tokens_to_ids(t) for t in VISUAL_PAD_TOKENS)
        pad_ids = {int(i) for i in ids if i is not None and i != tokenizer.unk_token_id}
        sampling = SamplingParams(max_tokens=settings.caption_max_tokens, temperature=settings.caption_temperature)
        prompt = settings.caption_prompt
        llm.chat([build_caption_messages(s, prompt) for s in warmup], sampling, use_tqdm=False)
        messages = [build_caption_messages(s, prompt) for s in load]
        started = time.perf_counter()
        outputs = llm.chat(messages, sampling, use_tqdm=False)
        wall = time.perf_counter() - started
    finally:
        _release(llm)
    prompts = [list(o.prompt_token_ids or []) for o in outputs]
    return CaptionRun(
        segments=len(load),
        video_s=sum(video_seconds(s) for s in load),
        wall_s=wall,
        visual_tokens=[visual_tokens(p, pad_ids) for p in prompts],
        prompt_tokens=[len(p) for p in prompts],
        completion_tokens=[len(o.outputs[0].token_ids) for o in outputs],
    )


def run_embed(settings: EmbedSettings, texts: Sequence[str]) -> EmbedRun:
    llm = _llm(settings.embed_model, embed_engine_kwargs(settings))
    try:
        llm.embed(list(texts[:4]), use_tqdm=False)  # warm-up
        started = time.perf_counter()
        outputs = llm.embed(list(texts), use_tqdm=False)
        wall = time.perf_counter() - started
    finally:
        _release(llm)
    return EmbedRun(texts=len(texts), wall_s=wall, dim=len(outputs[0].outputs.embedding) if outputs else 0)


# -- command --------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.gpu_bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--allow-cpu", action="store_true", help="no GPU: run the steps with the tiny CPU models")
    parser.add_argument("--segments", type=int, help="caption load (default 256 on a GPU, 6 on CPU)")
    parser.add_argument("--texts", type=int, help="embed load (default 4096 on a GPU, 16 on CPU)")
    parser.add_argument("--chunks", type=int, help="transcribe load in speech chunks (default 256 on a GPU, 8 on CPU)")
    parser.add_argument(
        "--media", type=Path, nargs="+", help="media to decode and shape the load from (default: samples)"
    )
    parser.add_argument("--caption-model", help=f"default {GPU_CAPTION_MODEL} on a GPU")
    parser.add_argument("--embed-model", help=f"default {GPU_EMBED_MODEL} on a GPU (or Qwen/Qwen3-Embedding-8B)")
    parser.add_argument("--transcribe-model", help=f"default {GPU_TRANSCRIBE_MODEL} on a GPU")
    parser.add_argument("--json", type=Path, help="also write the report here")
    return parser.parse_args(argv)


def _gpu_settings(args: argparse.Namespace) -> tuple[CaptionSettings, EmbedSettings, TranscribeSettings]:
    caption = CaptionSettings(
        caption_model=args.caption_model or os.environ.get("CAPSTREAM_CAPTION_MODEL", GPU_CAPTION_MODEL)
    )
    embed = EmbedSettings(embed_model=args.embed_model or os.environ.get("CAPSTREAM_EMBED_MODEL", GPU_EMBED_MODEL))
    transcribe = TranscribeSettings(
        transcribe_backend="vllm",
        transcribe_model=args.transcribe_model or os.environ.get("CAPSTREAM_TRANSCRIBE_MODEL", GPU_TRANSCRIBE_MODEL),
    )
    return caption, embed, transcribe


def _cpu_settings(args: argparse.Namespace) -> tuple[CaptionSettings, EmbedSettings, TranscribeSettings]:
    from workers.offline_profile import offline_env, offline_whisper_env

    for key, value in offline_env().items():
        os.environ.setdefault(key, value)
    overrides_c = {"caption_model": args.caption_model} if args.caption_model else {}
    overrides_e = {"embed_model": args.embed_model} if args.embed_model else {}
    # The offline profile transcribes with pocketsphinx; Whisper's figure needs the tiny Whisper.
    whisper = {
        k.removeprefix("CAPSTREAM_").lower(): v
        for k, v in offline_whisper_env().items()
        if k.startswith("CAPSTREAM_TRANSCRIBE_")
    }
    if args.transcribe_model:
        whisper["transcribe_model"] = args.transcribe_model
    return CaptionSettings(**overrides_c), EmbedSettings(**overrides_e), TranscribeSettings.model_validate(whisper)


def _device_name(gpu: bool) -> str:
    if not gpu:
        return f"CPU ({os.cpu_count()} cores)"
    import torch

    return str(torch.cuda.get_device_name(0))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    gpu = cuda_available()
    if not gpu and not args.allow_cpu:
        sys.stderr.write(NO_GPU + "\n")
        return 2
    configure_logging("WARNING", "console")  # logs to stderr: stdout is the report
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # vLLM logs to stdout: keep it short
    caption_settings, embed_settings, transcribe_settings = _gpu_settings(args) if gpu else _cpu_settings(args)
    segments_n = args.segments or (256 if gpu else 6)
    texts_n = args.texts or (4096 if gpu else 16)
    chunks_n = args.chunks or (256 if gpu else 8)
    media = list(args.media or sample_paths())

    speech: list[DecodedSpeech] = []
    samples, decode = decode_media(media, segment_policy(DecodeSettings()), speech)
    load = shape_caption_load(samples, segments_n)
    warmup = shape_caption_load(samples, 2, first=segments_n)  # frames of their own: no cache hits later
    texts = synthetic_captions(texts_n)
    gpus = int(caption_engine_kwargs(caption_settings).get("tensor_parallel_size", 1))
    transcribe: TranscribeRun | None = None
    with PeakSampler(gpu) as peaks:
        caption = run_caption(caption_settings, load, warmup)
        embed = run_embed(embed_settings, texts)
        if speech:  # the warm-up's audio has noise of its own: no cache hit later
            audio = shape_transcribe_load(speech, chunks_n + 2)
            transcribe = run_transcribe(transcribe_settings, audio[2:], audio[:2])
    report = build_report(
        device=_device_name(gpu),
        gpus=gpus,
        caption_model=caption_settings.serving.served_name,
        embed_model=embed_settings.serving.served_name,
        media=media,
        caption=caption,
        embed=embed,
        decode=decode,
        peak_gpu_memory_bytes=peaks.peak_gpu,
        peak_host_rss_bytes=peaks.peak_rss,
        transcribe=transcribe,
        transcribe_model=transcribe_settings.serving.served_name,
        transcribe_gpus=int(transcribe_engine_kwargs(transcribe_settings).get("tensor_parallel_size", 1)),
    )
    sys.stdout.write(format_report(report) + "\n")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(asdict(report), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
