"""Large objects are streamed, not copied: a 200 MB-class 1080p video in SeaweedFS is decoded
through a presigned URL with bounded range requests. A counting TCP proxy in front of S3
measures the bytes the decoder pulls; the decoder runs in its own process so its peak RSS
(VmHWM) is its own. Figures are printed (run with -s) and bounded by assertions."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from tests.stack_s3 import stack_s3_client
from workers.localstack import StackEndpoints, start_stack, stop_stack

pytestmark = pytest.mark.integration

MB = 1024 * 1024
CHUNK_S, REPEATS, FPS = 5, 8, 10  # 40 s of 1080p noise, ~200 MB
KEY = "big/noise-1080p.mp4"

# Runs in the child: the decode worker's own code path (ObjectSource presigns with the AWS
# credential chain; decode_segments streams the URL with the source's FFmpeg options).
_DECODE = """
import asyncio, json, sys
import av
from schemas.events import ObjectCreated
from workers.decode.container import open_media
from workers.decode.dispatch import decode_segments
from workers.decode.source import ObjectSource
from workers.decode.stage import segment_policy
from workers.settings import DecodeSettings

def vm(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024

async def presign(settings):
    source = ObjectSource(settings)
    await source.start()
    try:
        event = ObjectCreated(uri="s3://media/__KEY__", bucket="media", key="__KEY__")
        url = await source.resolve(event)
        return url, source.ffmpeg_options(url)
    finally:
        await source.close()

mode, window_s = sys.argv[1], float(sys.argv[2])
settings = DecodeSettings()
url, options = asyncio.run(presign(settings))
baseline = vm("VmRSS:")
segments = frames = 0
end_s = 0.0
if mode == "seek":
    with open_media(url, options=options) as container:
        stream = container.streams.video[0]
        container.seek(int(window_s / stream.time_base), stream=stream)
        frame = next(container.decode(stream))
        end_s, frames = float(frame.time), 1
else:
    gen = decode_segments(url, segment_policy(settings), options=options)
    for segment in gen:
        segments += 1
        frames += len(segment.frames)
        end_s = segment.end_s
        if window_s and end_s >= window_s:
            break
    gen.close()
print(json.dumps({"baseline_rss": baseline, "peak_rss": vm("VmHWM:"), "segments": segments,
                  "frames": frames, "end_s": end_s}))
""".replace("__KEY__", KEY)


class CountingProxy:
    """TCP proxy 127.0.0.1:port -> S3 that counts bytes sent back to the client."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.bytes_down = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CountingProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, count: bool) -> None:
            try:
                while data := await src.read(65536):
                    if count:
                        self.bytes_down += len(data)
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer, False), pipe(up_reader, writer, True))


def _make_big_video(path: Path) -> None:
    """5 s of 1080p block noise (incompressible enough for ~5 MB/s at 10 fps), encoded once
    with x264 ultrafast, then stream-copied 8 times end to end: ~200 MB in ~10 s of CPU."""
    chunk = path.with_suffix(".chunk.mp4")
    rng = np.random.default_rng(7)
    with av.open(str(chunk), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 1920, 1080, "yuv420p"
        stream.options = {"preset": "ultrafast", "qp": "30", "g": str(2 * FPS)}
        for _ in range(CHUNK_S * FPS):
            blocks = rng.integers(0, 256, (1080 // 4, 1920 // 4, 3), dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(np.repeat(np.repeat(blocks, 4, 0), 4, 1), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    with av.open(str(chunk)) as src, av.open(str(path), "w") as dst:
        in_stream = src.streams.video[0]
        out_stream = dst.add_stream_from_template(in_stream)
        assert in_stream.time_base is not None
        packets = [(p, p.pts, p.dts) for p in src.demux(in_stream) if p.pts is not None and p.dts is not None]
        span = int(CHUNK_S / in_stream.time_base)
        for i in range(REPEATS):
            for packet, pts, dts in packets:
                packet.pts, packet.dts, packet.stream = pts + i * span, dts + i * span, out_stream
                dst.mux(packet)
    chunk.unlink()


@pytest.fixture(scope="module")
def s3_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackEndpoints]:
    data_dir = tmp_path_factory.mktemp("stream-stack")
    endpoints = start_stack(data_dir, s3_events=False)
    try:
        yield endpoints
    finally:
        stop_stack(data_dir)


@pytest.fixture(scope="module")
def big_object(s3_stack: StackEndpoints, tmp_path_factory: pytest.TempPathFactory) -> int:
    path = tmp_path_factory.mktemp("big") / "noise.mp4"
    _make_big_video(path)

    async def upload() -> None:
        async with stack_s3_client(s3_stack) as s3:
            with path.open("rb") as body:
                await s3.put_object(Bucket=s3_stack.bucket, Key=KEY, Body=body)

    asyncio.run(upload())
    size = path.stat().st_size
    path.unlink()
    return size


def _decode(
    stack: StackEndpoints, proxy: CountingProxy, mode: str, window_s: float, **settings: str
) -> dict[str, float]:
    env = {
        **os.environ,
        **stack.env(),
        "CAPSTREAM_S3_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}",  # presign against the proxy
        "CAPSTREAM_LOG_LEVEL": "WARNING",
        **{f"CAPSTREAM_{k.upper()}": v for k, v in settings.items()},
    }
    before = proxy.bytes_down
    done = subprocess.run(
        [sys.executable, "-c", _DECODE, mode, str(window_s)],
        env=env,
        capture_output=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    result: dict[str, float] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    result["bytes"] = proxy.bytes_down - before
    return result


def test_large_object_is_streamed_with_bounded_memory_and_reads(s3_stack: StackEndpoints, big_object: int) -> None:
    size = big_object
    assert size > 150 * MB, size
    port = int(s3_stack.s3_endpoint_url.rpartition(":")[2])
    with CountingProxy(port) as proxy:
        # A short sampled window: the first 2 s segment only.
        window = _decode(s3_stack, proxy, "window", 2.0, max_segment_s="2")
        seek = _decode(s3_stack, proxy, "seek", 30.0)
        full = _decode(s3_stack, proxy, "full", 0.0)
    figures = {
        "object_mb": round(size / MB, 1),
        "window_2s": {"mb_read": round(window["bytes"] / MB, 2), "ratio": round(window["bytes"] / size, 4)},
        "seek_30s_one_frame": {"mb_read": round(seek["bytes"] / MB, 2), "ratio": round(seek["bytes"] / size, 4)},
        "full_decode": {
            "mb_read": round(full["bytes"] / MB, 1),
            "segments": full["segments"],
            "peak_rss_mb": round(full["peak_rss"] / MB, 1),
            "baseline_rss_mb": round(full["baseline_rss"] / MB, 1),
        },
        "window_peak_rss_mb": round(window["peak_rss"] / MB, 1),
    }
    sys.stdout.write(f"\nstreaming figures: {json.dumps(figures)}\n")
    assert window["end_s"] == pytest.approx(2.0) and window["bytes"] < 0.1 * size, figures
    assert 29.0 <= seek["end_s"] <= 31.0 and seek["bytes"] < 0.1 * size, figures
    assert full["end_s"] == pytest.approx(CHUNK_S * REPEATS, abs=0.5), full
    # The whole object went through the decoder; memory stayed a small fraction of it.
    assert full["bytes"] >= 0.95 * size
    assert full["peak_rss"] < 500 * MB and full["peak_rss"] - full["baseline_rss"] < 350 * MB, figures
