"""Peak memory of one decode on the worst inputs the decode budgets let through: the figure
behind the decode worker's memory limits (docker/compose.yaml, docker/k8s/workers.yaml).

Before this bench the limits cited a "~580 MB peak" that no code produced. Each input here is
built at the configured limits (``DecodeSettings`` from the environment: 8192x8192 pictures,
1e9 decoded pixels per media second, 1e6 per compressed byte), then decoded in a child process
by the production entry point (``decode_segments`` with the stage's ``segment_policy``) after
importing what a decode worker imports; the child reports its own VmHWM (ru_maxrss would
carry the parent's peak over through fork and exec). Inputs:

- ``still-8k``: an 8192x8192 JPEG, the largest picture accepted;
- ``video-8k``: 8192x8192 H.264 at 12 fps (the largest frames at a rate within the pixel-rate
  budget), decoded with FFmpeg's frame threads;
- ``gif-bomb``: an 8000x8000 GIF repainting one pixel per frame, refused by the pixel budgets
  after its free frames (what the old comment described).

FFmpeg's decoder holds a picture per frame thread. ``CAPSTREAM_DECODE_THREADS`` sizes the
worker's pool of objects, not the codec's threads: the codec picks its own count from the
CPUs it sees (cores + 1, at most 16), and in a container that is the node's cores, not the
CPU limit. So the video case runs with the 3 threads a 2-core machine picks and with the 16
a large node picks; the worst of all cases is the figure the limits use.

Measured 2026-12-05 on the 2-core test machine (PyAV 18.1 with FFmpeg 8.1, DecodeSettings'
defaults), peak RSS with the worker's imports (123 MB) included: still-8k 241 MB; video-8k
1344 MB with FFmpeg's own thread count (3 here), 2426 MB with 16; gif-bomb 654 MB (refused,
decode_budget_exceeded). So the old 580 MB was about the GIF bomb's; an 8K video the budgets
accept costs up to 4x that. WORST_PEAK_BYTES holds the worst.

    python -m loadtest.decode_memory                 # every case, a table
    python -m loadtest.decode_memory --case video-8k --threads 16 --json out.json
"""

from __future__ import annotations

import argparse
import io
import json
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

from PIL import Image

from loadtest import media_factory as mf

ROOT = Path(__file__).resolve().parents[1]
MB = 1000**2
# The worst measured peak (video-8k with 16 codec threads, imports included): what the
# decode worker's memory limits are sized from, and what tests/unit/test_decode_memory.py
# holds the decode to.
WORST_PEAK_BYTES: Final = 2426 * MB
# The largest codec thread count FFmpeg picks by itself (MAX_AUTO_THREADS in libavcodec).
FFMPEG_MAX_AUTO_THREADS: Final = 16

# Runs in the child: a decode worker's imports, then one decode, then the child's own peaks.
_CHILD = """
import dataclasses, json, sys, time
import workers.app, workers.decode.loops  # what `capstream worker decode` has imported
from workers.decode.dispatch import decode_segments
from workers.decode.errors import MediaError
from workers.decode.stage import segment_policy
from workers.settings import DecodeSettings

def vm(name):
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith(name))

imports = vm("VmHWM:")
policy = dataclasses.replace(segment_policy(DecodeSettings()), decode_threads=int(sys.argv[2]))
started = time.perf_counter()
outcome = {"segments": 0, "reason": None}
try:
    outcome["segments"] = sum(1 for _ in decode_segments(sys.argv[1], policy))
except MediaError as exc:
    outcome["reason"] = exc.reason
outcome.update(seconds=time.perf_counter() - started, imports_rss=imports, peak_rss=vm("VmHWM:"))
print(json.dumps(outcome))
"""


@dataclass(frozen=True)
class Measurement:
    case: str
    codec_threads: int  # 0 = FFmpeg's choice on this machine
    input_bytes: int
    segments: int
    reason: str | None  # why the decode refused the input, None if it was decoded whole
    seconds: float
    imports_rss: int
    peak_rss: int


def gif_bomb(width: int = 8000, height: int = 8000, frames: int = 2000, delay_cs: int = 2) -> bytes:
    """A GIF whose `frames` frames each paint one pixel of a `width` x `height` canvas.

    Every frame is ~23 bytes, yet every decoded frame is the whole canvas.
    """
    one = io.BytesIO()
    Image.new("P", (1, 1)).save(one, "GIF")
    pixel = one.getvalue()
    flags = pixel[10]
    palette = 3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0
    descriptor = pixel.index(b"\x2c", 13 + palette)
    image = pixel[descriptor:-1]  # image descriptor + LZW data, without the trailer
    out = bytearray(b"GIF89a" + struct.pack("<HH", width, height) + pixel[10:13] + pixel[13 : 13 + palette])
    out += b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"  # loop forever
    control = b"\x21\xf9\x04\x04" + struct.pack("<H", delay_cs) + b"\x00\x00"
    for _ in range(frames):
        out += control + image
    return bytes(out + b"\x3b")


def _largest_side() -> int:
    from workers.settings import DecodeSettings

    side = int(DecodeSettings().max_source_pixels ** 0.5)
    return side - side % 16  # whole macroblocks


def _video_fps() -> int:
    """The highest whole frame rate whose largest frames stay within the pixel-rate budget."""
    from workers.settings import DecodeSettings

    settings = DecodeSettings()
    return max(1, int(settings.max_decode_pixel_rate / _largest_side() ** 2))


def make_still(path: Path) -> None:
    side = _largest_side()
    mf.make_image(path, "JPEG", size=(side, side), name="astronaut")


def make_video(path: Path) -> None:
    side = _largest_side()
    mf.make_montage_video(path, [mf.photo("astronaut")], 1.0, _video_fps(), (side, side))


def make_gif_bomb(path: Path) -> None:
    path.write_bytes(gif_bomb())


CASES: Final[dict[str, tuple[str, Callable[[Path], None]]]] = {
    "still-8k": ("still.jpg", make_still),
    "video-8k": ("video.mp4", make_video),
    "gif-bomb": ("bomb.gif", make_gif_bomb),
}
# (case, codec threads) measured by default: 0 is FFmpeg's own choice on this machine.
DEFAULT_RUNS: Final = (("still-8k", 0), ("video-8k", 0), ("video-8k", FFMPEG_MAX_AUTO_THREADS), ("gif-bomb", 0))


def build(case: str, directory: Path) -> Path:
    name, make = CASES[case]
    path = directory / name
    if not path.exists():
        make(path)
    return path


def measure(case: str, path: Path, codec_threads: int = 0, timeout_s: float = 600.0) -> Measurement:
    """Decode `path` in a fresh child process and return its peak RSS."""
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), str(codec_threads)],
        capture_output=True,
        timeout=timeout_s,
        cwd=ROOT,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"decode child failed on {case}: {done.stderr.decode()[-3000:]}")
    result = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return Measurement(case=case, codec_threads=codec_threads, input_bytes=path.stat().st_size, **result)


def run(runs: list[tuple[str, int]], directory: Path) -> list[Measurement]:
    return [measure(case, build(case, directory), threads) for case, threads in runs]


def report(measurements: list[Measurement]) -> str:
    lines = [f"{'case':10} {'threads':>7} {'input':>9} {'outcome':>24} {'s':>6} {'imports':>8} {'peak':>8}"]
    for m in measurements:
        outcome = m.reason or f"{m.segments} segments"
        threads = str(m.codec_threads or "auto")
        lines.append(
            f"{m.case:10} {threads:>7} {m.input_bytes / MB:8.1f}M {outcome:>24} {m.seconds:6.1f} "
            f"{m.imports_rss / MB:7.0f}M {m.peak_rss / MB:7.0f}M"
        )
    worst = max(measurements, key=lambda m: m.peak_rss)
    lines.append(f"worst: {worst.case} at {worst.codec_threads or 'auto'} codec threads, {worst.peak_rss / MB:.0f} MB")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--case", choices=sorted(CASES), action="append", help="default: every case")
    parser.add_argument("--threads", type=int, default=None, help="codec threads (0 = FFmpeg's choice)")
    parser.add_argument("--json", type=Path, help="write the measurements here")
    args = parser.parse_args(argv)
    runs = [(c, t) for c, t in DEFAULT_RUNS if not args.case or c in args.case]
    if args.threads is not None:
        runs = list(dict.fromkeys((c, args.threads) for c, _ in runs))
    with tempfile.TemporaryDirectory(prefix="decode-memory-") as tmp:
        measurements = run(runs, Path(tmp))
    print(report(measurements))
    if args.json:
        args.json.write_text(json.dumps([asdict(m) for m in measurements], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
