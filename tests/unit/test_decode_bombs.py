"""Decompression bombs (issue 8, findings 5 and 6): tiny files that declare huge pictures, or
cost minutes of decoding, are refused early with a stable reason.

The bombs are built here, byte by byte, not committed. Peak memory is measured in a child
process from its VmHWM, so the test runner's own footprint does not count (ru_maxrss would:
Linux carries it over from the parent through fork and exec, and a runner that loaded vLLM
is past 2 GB).
"""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from loadtest import media_factory as mf
from loadtest.decode_memory import gif_bomb
from workers.decode.dispatch import decode_segments
from workers.decode.errors import MediaError
from workers.decode.policy import SegmentPolicy
from workers.decode.stage import segment_policy
from workers.settings import DecodeSettings

MB = 1024 * 1024
ROOT = Path(__file__).resolve().parents[2]


def png_bomb(width: int = 16000, height: int = 16000) -> bytes:
    """A 16-bit RGBA PNG of zeros: ~2 MB on disk, ~2 GB decoded.

    Deflate blocks after a full flush do not refer back, so one compressed block of 100 rows
    is repeated instead of compressing 2 GB (1 s instead of 10 s).
    """

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = 100
    block = bytes((1 + width * 8) * rows)  # filter byte + 8 bytes per pixel
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH)
    again = deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH)
    adler = 1
    for _ in range(height // rows):
        adler = zlib.adler32(block, adler)
    body = b"\x78\xda" + first + again * (height // rows - 1) + deflate.flush() + struct.pack(">I", adler)
    header = struct.pack(">IIBBBBB", width, height, 16, 6, 0, 0, 0)  # 16-bit RGBA
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def webp_canvas_bomb(width: int = 16000, height: int = 16000) -> bytes:
    """An animated WebP (VP8X + ANIM + one 1x1 ANMF frame) declaring a huge canvas."""
    tiny = io.BytesIO()
    Image.new("RGB", (1, 1)).save(tiny, "WEBP", lossless=True)
    vp8l = tiny.getvalue()[12:]  # the image chunk after RIFF....WEBP

    def chunk(kind: bytes, data: bytes) -> bytes:
        return kind + struct.pack("<I", len(data)) + data + (b"\x00" if len(data) % 2 else b"")

    def u24(value: int) -> bytes:
        return value.to_bytes(3, "little")

    vp8x = chunk(b"VP8X", bytes([0x02, 0, 0, 0]) + u24(width - 1) + u24(height - 1))
    anim = chunk(b"ANIM", b"\x00\x00\x00\x00" + b"\x00\x00")
    anmf = chunk(b"ANMF", u24(0) + u24(0) + u24(0) + u24(0) + u24(100) + b"\x00" + vp8l)
    body = b"WEBP" + vp8x + anim + anmf
    return b"RIFF" + struct.pack("<I", len(body)) + body


# Runs in the child: the production entry point, then the child's own peak RSS.
_CHILD = """
import json, sys, time
from workers.decode.dispatch import decode_segments
from workers.decode.errors import MediaError
from workers.decode.policy import SegmentPolicy
started = time.perf_counter()
outcome = {"reason": None, "message": ""}
try:
    outcome["segments"] = sum(1 for _ in decode_segments(sys.argv[1], SegmentPolicy()))
except MediaError as exc:
    outcome = {"reason": exc.reason, "message": exc.message}
outcome["seconds"] = time.perf_counter() - started
outcome["peak_rss"] = next(
    int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:")
)
print(json.dumps(outcome))
"""


def decode_in_child(path: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path)], capture_output=True, timeout=120, cwd=ROOT, check=False
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    sys.stdout.write(f"\n{path.name}: {json.dumps(result)}\n")
    return result


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("bomb.png", png_bomb),
        ("canvas.gif", lambda: gif_bomb(16000, 16000, frames=1)),
    ],
)
@pytest.mark.impure  # a child process, for its own peak RSS
def test_huge_declared_picture_is_refused_before_it_is_decoded(tmp_path: Path, name: str, make: Any) -> None:
    path = tmp_path / name
    path.write_bytes(make())
    assert path.stat().st_size < 3 * MB
    result = decode_in_child(path)
    assert result["reason"] == "resolution_too_large", result
    assert "16000x16000" in result["message"], result
    # Importing PyAV, numpy and Pillow is ~100 MB; decoding the picture would be 1-2 GB.
    assert result["peak_rss"] < 400 * MB, result


def test_animated_webp_with_a_huge_canvas_is_too_large_not_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "canvas.webp"
    path.write_bytes(webp_canvas_bomb())
    with pytest.raises(MediaError) as info:
        list(decode_segments(str(path), SegmentPolicy()))
    assert info.value.reason == "resolution_too_large", info.value.message
    assert "16000x16000" in info.value.message


@pytest.mark.parametrize("delay_cs", [2, 10])
def test_gif_bomb_exhausts_the_pixel_budget_in_seconds(tmp_path: Path, delay_cs: int) -> None:
    # 2 cs: 50 frames/s of 64 Mpx; 10 cs: 10 frames/s, a pixel rate real 4K video has, so
    # only the tiny size of the file gives it away.
    path = tmp_path / "bomb.gif"
    path.write_bytes(gif_bomb(delay_cs=delay_cs))
    assert path.stat().st_size < 64 * 1024
    started = time.perf_counter()
    with pytest.raises(MediaError) as info:
        list(decode_segments(str(path), SegmentPolicy()))
    elapsed = time.perf_counter() - started
    sys.stdout.write(f"\ngif bomb ({delay_cs} cs frames) refused after {elapsed:.2f} s: {info.value.message}\n")
    assert info.value.reason == "decode_budget_exceeded"
    assert "pixels" in info.value.message  # the pixel budget stopped it, not the wall clock


def test_wall_clock_budget_stops_a_slow_decode(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    mf.make_short_clip(path, 1.0)
    with pytest.raises(MediaError) as info:
        list(decode_segments(str(path), SegmentPolicy(max_decode_s=1e-9)))
    assert info.value.reason == "decode_budget_exceeded"
    assert "CAPSTREAM_MAX_DECODE_S" in info.value.message


def test_ordinary_media_stays_within_the_budget(tmp_path: Path) -> None:
    # Static content is the cheapest per byte legitimate media gets: still within budget.
    path = tmp_path / "static.mp4"
    mf.make_montage_video(path, mf.photos(1), 6.0, fps=30, size=(640, 480), pan=False)
    tight = SegmentPolicy(max_source_pixels=640 * 480)  # the smallest base allowance that opens it
    assert [s.reason for s in decode_segments(str(path), tight)][-1] == "end"


def test_budget_settings_reach_the_policy() -> None:
    policy = segment_policy(
        DecodeSettings(max_decode_s=42.0, max_decode_pixel_rate=5e8, max_pixels_per_byte=1e5, max_source_pixels=10**6)
    )
    assert (policy.max_decode_s, policy.max_decode_pixel_rate, policy.max_pixels_per_byte) == (42.0, 5e8, 1e5)
    assert policy.max_source_pixels == 10**6
