"""Decode-worker throughput against the ffmpeg CLI doing the same sampling, in the same run.

    python -m loadtest.decode_bench [--sizes 720p,1080p] [--seconds 60] [--repeat 1] [--out FILE]

Generates (once, cached) H.264 videos of real photographs panning, a cut every 7.5 s, 30 fps,
keyframe every 2 s, 2 B-frames, x264 `veryfast` (realistic decode cost: CABAC and deblocking on).
For each policy it runs the decode worker's core exactly as the worker does (`decode_segments`
in a thread behind `iterate_in_thread`, JPEG encoding included) and the equivalent ffmpeg
command, and reports source frames/s, segments/s, CPU seconds per minute of video and
ratio = ffmpeg wall time / ours (>= 1: we are faster). "every frame" compares a bare PyAV
decode loop with `ffmpeg -i X -f null -`. "CPU ratio" (ffmpeg CPU s / ours) is also given:
wall time is only fair on an otherwise idle machine. Prints a table and writes JSON. Not a test: the
figures depend on the machine, and ffmpeg must be installed (`apt-get install -y ffmpeg`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import av

from loadtest import media_factory as mf
from workers.decode.dispatch import decode_segments
from workers.decode.frames import target_size
from workers.decode.policy import SegmentPolicy
from workers.decode.threaded import iterate_in_thread
from workers.runtime.logging import configure_logging

SIZES = {"720p": (1280, 720), "1080p": (1920, 1080)}
FPS = 30
KEYINT = 2 * FPS
CACHE = Path(os.environ.get("CAPSTREAM_BENCH_CACHE", Path.home() / ".cache" / "capstream" / "bench"))


@dataclass
class Row:
    video: str
    config: str
    wall_s: float
    cpu_s: float
    frames_per_s: float  # source frames covered per wall second
    segments_per_s: float
    sampled_frames: int
    cpu_s_per_video_min: float
    ffmpeg_wall_s: float
    ffmpeg_cpu_s: float
    ratio_vs_ffmpeg: float  # ffmpeg wall / ours
    cpu_ratio_vs_ffmpeg: float  # ffmpeg CPU / ours: steadier than wall time on a shared machine


def make_video(size_name: str, seconds: float) -> Path:
    path = CACHE / f"bench-{size_name}-{seconds:g}s.mp4"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        names = mf.PHOTO_NAMES
        images = [mf.photo(names[i % len(names)]) for i in range(max(1, round(seconds / 7.5)))]
        sys.stdout.write(f"generating {path} ...\n")
        sys.stdout.flush()
        partial = path.with_suffix(".partial.mp4")
        mf.make_montage_video(
            partial,
            images,
            seconds / len(images),
            fps=FPS,
            size=SIZES[size_name],
            keyint=KEYINT,
            options={"preset": "veryfast", "crf": "23"},
        )
        partial.rename(path)
    return path


def _cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_worker(path: Path, policy: SegmentPolicy) -> tuple[float, float, int, int]:
    """Wall s, CPU s, segments, sampled frames of the worker's decode path (thread + asyncio)."""

    async def consume() -> tuple[int, int]:
        segments = frames = 0
        async for segment in iterate_in_thread(lambda: decode_segments(str(path), policy)):
            segments += 1
            frames += len(segment.frames)
        return segments, frames

    cpu, started = _cpu_self(), time.perf_counter()
    segments, frames = asyncio.run(consume())
    return time.perf_counter() - started, _cpu_self() - cpu, segments, frames


def run_pyav_decode_all(path: Path) -> tuple[float, float, int, int]:
    cpu, started = _cpu_self(), time.perf_counter()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        decoded = sum(1 for _ in container.decode(stream))
    return time.perf_counter() - started, _cpu_self() - cpu, 0, decoded


def run_ffmpeg(args: list[str]) -> tuple[float, float]:
    cpu, started = _cpu_children(), time.perf_counter()
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", *args, "-f", "null", "-"], check=True)
    return time.perf_counter() - started, _cpu_children() - cpu


def paired(
    runs: int, ours: Callable[[], tuple[float, float, int, int]], theirs: Callable[[], tuple[float, float]]
) -> tuple[tuple[float, float, int, int], tuple[float, float]]:
    """Median-wall-time run of each, alternating ours and ffmpeg so load drifts hit both alike."""
    mine: list[tuple[float, float, int, int]] = []
    ffmpeg: list[tuple[float, float]] = []
    for _ in range(runs):
        mine.append(ours())
        ffmpeg.append(theirs())
    mine.sort(key=lambda r: r[0])
    ffmpeg.sort(key=lambda r: r[0])
    return mine[len(mine) // 2], ffmpeg[len(ffmpeg) // 2]


def bench_video(size_name: str, path: Path, seconds: float, repeat: int) -> list[Row]:
    policy = SegmentPolicy()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        total_frames = stream.frames or round(seconds * FPS)
        w, h = target_size(stream.codec_context.width, stream.codec_context.height, policy.max_pixels)
    scale = f"scale={w}:{h}:flags=area"
    sampled = ["-i", str(path), "-vf", f"fps={policy.sample_fps:g},{scale}"]
    configs: list[tuple[str, Callable[[], tuple[float, float, int, int]], list[str]]] = [
        ("scene (default)", lambda: run_worker(path, SegmentPolicy(mode="scene")), sampled),
        ("fixed", lambda: run_worker(path, SegmentPolicy(mode="fixed")), sampled),
        ("keyframe", lambda: run_worker(path, SegmentPolicy(mode="keyframe")), ["-skip_frame", "nokey", *sampled]),
        ("every frame (bare decode)", lambda: run_pyav_decode_all(path), ["-i", str(path)]),
    ]
    rows = []
    for name, ours, ffmpeg_args in configs:
        (wall, cpu, segments, frames), (ff_wall, ff_cpu) = paired(
            repeat,
            ours,
            lambda args=ffmpeg_args: run_ffmpeg(args),  # type: ignore[misc]
        )
        rows.append(
            Row(
                video=f"{size_name} {seconds:g}s",
                config=name,
                wall_s=round(wall, 3),
                cpu_s=round(cpu, 3),
                frames_per_s=round(total_frames / wall, 1),
                segments_per_s=round(segments / wall, 2),
                sampled_frames=int(frames),
                cpu_s_per_video_min=round(cpu / (seconds / 60), 2),
                ffmpeg_wall_s=round(ff_wall, 3),
                ffmpeg_cpu_s=round(ff_cpu, 3),
                ratio_vs_ffmpeg=round(ff_wall / wall, 2),
                cpu_ratio_vs_ffmpeg=round(ff_cpu / cpu, 2) if cpu > 0 else 0.0,
            )
        )
        _print_row(rows[-1])
    return rows


_HEADER = (
    f"{'video':<10} {'config':<26} {'wall s':>7} {'frames/s':>9} {'segs/s':>7} {'sampled':>7} "
    f"{'CPU s/min':>9} {'ffmpeg s':>8} {'ratio':>6} {'CPU ratio':>9}"
)


def _print_row(row: Row) -> None:
    sys.stdout.write(
        f"{row.video:<10} {row.config:<26} {row.wall_s:>7.2f} {row.frames_per_s:>9.1f} {row.segments_per_s:>7.2f} "
        f"{row.sampled_frames:>7} {row.cpu_s_per_video_min:>9.2f} {row.ffmpeg_wall_s:>8.2f} "
        f"{row.ratio_vs_ffmpeg:>6.2f} {row.cpu_ratio_vs_ffmpeg:>9.2f}\n"
    )
    sys.stdout.flush()


def main() -> int:
    configure_logging("WARNING", "console")  # logs to stderr: stdout is the table
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="720p,1080p", help="comma list of 720p,1080p")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each generated video")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the median is kept")
    parser.add_argument("--out", type=Path, default=CACHE / "decode_bench.json")
    args = parser.parse_args()
    if shutil.which("ffmpeg") is None:
        sys.stderr.write("ffmpeg CLI not found: the comparison needs it (apt-get install -y ffmpeg)\n")
        return 2
    version = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout.split("\n", 1)[0]
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    videos = {name: make_video(name, args.seconds) for name in sizes}
    sys.stdout.write(f"cores={os.cpu_count()} pyav={av.__version__} (FFmpeg {av.ffmpeg_version_info}) cli={version}\n")
    sys.stdout.write(_HEADER + "\n")
    rows = [row for name, path in videos.items() for row in bench_video(name, path, args.seconds, args.repeat)]
    result = {
        "machine": {"cores": os.cpu_count(), "pyav": av.__version__, "pyav_ffmpeg": av.ffmpeg_version_info},
        "ffmpeg_cli": version,
        "videos": {name: str(path) for name, path in videos.items()},
        "fps": FPS,
        "keyint": KEYINT,
        "seconds": args.seconds,
        "repeat": args.repeat,
        "rows": [asdict(row) for row in rows],
        "median_ratio": statistics.median(r.ratio_vs_ffmpeg for r in rows) if rows else None,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    sys.stdout.write(f"wrote {args.out}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
