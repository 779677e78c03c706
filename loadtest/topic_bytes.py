"""Bytes each topic holds per hour of media: the broker's disk, now that the record topics are
kept forever (workers/runtime/retention.py) and the segments topic for 3 days.

It runs the real pipeline offline (the local stack, ``capstream run`` with the tiny CPU
models) on the shipped samples plus a two-minute montage of photographs, waits until every
object is done, then reads every pipeline topic to its end (``read_to_end``) and sums each
record's key, value and headers: what the broker stores, before its own batch framing,
compression and replication. Media time is the videos' container duration (stills add
records but no media time, so they are left out of the rate).

Two topics depend on the models more than on the media, so they are also projected:

- embeddings: the vector is JSON floats, measured bytes per value x the production model's
  dimensions (Qwen3-Embedding-8B: 4096) instead of all-MiniLM's 384;
- captions: the tiny model stops at CAPSTREAM_CAPTION_MAX_TOKENS=24 tokens of junk;
  production allows 256, so the caption text is projected at 256 tokens x the measured bytes
  per token of text (an upper bound: real captions stop earlier).

Figures: docs/sizing.md#broker-disk (measured 2026-12-05 on the 2-core test machine).

    python -m loadtest.topic_bytes [--json out.json] [--montage-s 120]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import av

from loadtest import media_factory as mf
from workers.cli.submit import submit, wait_for
from workers.cli.worker_process import spawn_worker, stop_worker
from workers.localstack import start_stack, stop_stack
from workers.offline_profile import offline_env
from workers.runtime.kafka import read_to_end
from workers.samples import sample_paths
from workers.settings import CaptionSettings, S3Settings
from workers.stages import REGISTRY

HOUR_S: Final = 3600.0
PRODUCTION_DIM: Final = 4096  # Qwen3-Embedding-8B, docker/compose.yaml's embed model
OFFLINE_CAPTION_TOKENS: Final = 24  # workers/offline_profile.py's CAPSTREAM_CAPTION_MAX_TOKENS


@dataclass
class TopicSize:
    records: int = 0
    bytes: int = 0
    per_media_hour: float = 0.0


@dataclass
class Report:
    media_s: float
    objects: int
    topics: dict[str, TopicSize] = field(default_factory=dict)
    roles: dict[str, str] = field(default_factory=dict)
    embedding_dim: int = 0
    bytes_per_vector_value: float = 0.0
    embedding_bytes_at_production_dim: float = 0.0  # per record
    caption_text_bytes: float = 0.0  # per record, as measured
    caption_bytes_at_production_tokens: float = 0.0  # per record, projected


def media_seconds(paths: list[Path]) -> float:
    total = 0.0
    for path in paths:
        with av.open(str(path)) as container:
            if container.format.name not in ("image2", "jpeg_pipe", "png_pipe") and container.duration:
                total += container.duration / av.time_base
    return total


def make_media(directory: Path, montage_s: float) -> list[Path]:
    montage = directory / "montage.mp4"
    images = mf.photos(len(mf.PHOTO_NAMES))
    mf.make_montage_video(montage, images, montage_s / len(images), fps=24, size=(640, 360))
    return [*sample_paths(), montage]


async def measure_topics(settings: S3Settings) -> dict[str, TopicSize]:
    sizes: dict[str, TopicSize] = {}
    for topic in REGISTRY.topics(settings):
        size = sizes.setdefault(topic, TopicSize())
        async for batch in read_to_end(settings.kafka_bootstrap, [topic]):
            for r in batch:
                headers = sum(len(k) + len(v or b"") for k, v in r.headers)
                size.records += 1
                size.bytes += len(r.key or b"") + len(r.value or b"") + headers
    return sizes


async def model_shares(settings: S3Settings) -> tuple[int, float, float]:
    """(embedding dim, bytes per vector value, caption text bytes per record), as measured."""
    dims, vector_bytes, values, text_bytes, captions = 0, 0, 0, 0, 0
    async for batch in read_to_end(settings.kafka_bootstrap, [settings.topic_embeddings]):
        for r in batch:
            vector = json.loads(r.value or b"{}")["vector"]
            dims = len(vector)
            vector_bytes += len(json.dumps(vector, separators=(",", ":")))
            values += len(vector)
    async for batch in read_to_end(settings.kafka_bootstrap, [settings.topic_captions]):
        for r in batch:
            text_bytes += len(json.loads(r.value or b"{}")["text"].encode())
            captions += 1
    return dims, vector_bytes / max(values, 1), text_bytes / max(captions, 1)


async def pipeline_run(media: list[Path], timeout_s: float) -> Report:
    settings = S3Settings()
    submitted = await submit(media, settings)
    names = {s.object_id: Path(s.name).name for s in submitted}
    states = await wait_for(list(names), names, settings, timeout_s, show=False)
    if not all(p is not None and p.state == "done" for p in states.values()):
        raise RuntimeError(f"not every object was done: {states}")
    report = Report(media_s=media_seconds(media), objects=len(submitted))
    report.topics = await measure_topics(settings)
    report.roles = {t: r.role for t, r in REGISTRY.topic_retention(settings).items()}
    dim, per_value, text = await model_shares(settings)
    report.embedding_dim, report.bytes_per_vector_value, report.caption_text_bytes = dim, per_value, text
    embeddings = report.topics[settings.topic_embeddings]
    per_embedding = embeddings.bytes / max(embeddings.records, 1)
    report.embedding_bytes_at_production_dim = per_embedding + (PRODUCTION_DIM - dim) * per_value
    captions = report.topics[settings.topic_captions]
    per_caption = captions.bytes / max(captions.records, 1)
    tokens = CaptionSettings().caption_max_tokens
    report.caption_bytes_at_production_tokens = per_caption + text * (tokens / OFFLINE_CAPTION_TOKENS - 1)
    for size in report.topics.values():
        size.per_media_hour = size.bytes * HOUR_S / report.media_s
    return report


def render(report: Report, segments_topic: str, embeddings_topic: str, captions_topic: str) -> str:
    lines = [f"{report.objects} objects, {report.media_s:.1f} s of video; bytes per media hour (key+value+headers):"]
    for topic, size in report.topics.items():
        if size.records:
            lines.append(
                f"  {topic:24} {report.roles[topic]:12} {size.records:5} records "
                f"{size.bytes / 1e3:9.1f} kB  {size.per_media_hour / 1e6:8.2f} MB/media-hour"
            )
    per_hour = {t: s.per_media_hour for t, s in report.topics.items()}
    records_per_hour = {t: s.records * HOUR_S / report.media_s for t, s in report.topics.items()}
    embed_h = records_per_hour[embeddings_topic] * report.embedding_bytes_at_production_dim
    caption_h = records_per_hour[captions_topic] * report.caption_bytes_at_production_tokens
    lines += [
        f"  embeddings at {PRODUCTION_DIM} dims ({report.bytes_per_vector_value:.1f} B per JSON value): "
        f"{report.embedding_bytes_at_production_dim / 1e3:.1f} kB per record, {embed_h / 1e6:.2f} MB/media-hour",
        f"  captions at {CaptionSettings().caption_max_tokens} tokens (measured text "
        f"{report.caption_text_bytes:.0f} B at {OFFLINE_CAPTION_TOKENS}): "
        f"{report.caption_bytes_at_production_tokens / 1e3:.2f} kB per record, {caption_h / 1e6:.2f} MB/media-hour",
        f"  segments (3 days): {per_hour[segments_topic] / 1e6:.1f} MB/media-hour",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--montage-s", type=float, default=120.0, help="seconds of the photo montage")
    parser.add_argument("--timeout-s", type=float, default=600.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    data_dir = Path(tempfile.mkdtemp(prefix="capstream-topic-bytes-"))
    endpoints = start_stack(data_dir)
    os.environ.update(endpoints.env())
    workers = spawn_worker(["run"], {**os.environ, **offline_env()}, data_dir / "workers.log")
    try:
        report = asyncio.run(pipeline_run(make_media(data_dir, args.montage_s), args.timeout_s))
    finally:
        stop_worker(workers)
        stop_stack(data_dir)
    settings = S3Settings()
    print(render(report, settings.topic_segments, settings.topic_embeddings, settings.topic_captions))
    if args.json:
        data: dict[str, Any] = asdict(report)
        args.json.write_text(json.dumps(data, indent=2))
    shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
