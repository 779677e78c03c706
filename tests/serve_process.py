"""A live ``capstream serve`` for the tests: a subprocess on the test stack's Redis and S3, the
offline MiniLM on vLLM embedding queries, and a LanceDB table of ``tests.search_fixtures`` in a
tmp dir, with API keys of several scopes made beforehand (test_search_serve, test_client,
test_mcp)."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import botocore.session
import httpx
from redis.asyncio import Redis

from tests.search_fixtures import COLLECTIONS, COLLECTIONS_ENV, DOCS, TABLE, build_table
from workers.access.api_keys import ApiKeyStore
from workers.localstack import StackEndpoints, free_port
from workers.offline_profile import offline_env
from workers.state import ProgressStore, RedisKeys

ROOT = Path(__file__).resolve().parents[1]
CAT = next(d for d in DOCS if d.key == "clips/cat.mp4" and d.index == 0)
CAT_LATER = next(d for d in DOCS if d.key == "clips/cat.mp4" and d.index == 1)


def tiny_video(seconds: int = 12, fps: int = 2) -> bytes:
    """A real H.264 MP4 (64x64, a few kB) for cat.mp4, so a browser can open a link to it at a
    segment's time."""
    import av
    import numpy as np

    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for i in range(seconds * fps):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), (i * 9) % 256, np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return out.getvalue()


MEDIA = tiny_video()
STOCK = next(d for d in DOCS if d.key == "other/stock.mp4")  # the archive collection's


@dataclass
class Server:
    url: str
    prefix: str
    artifacts: Path
    tokens: dict[str, str]  # every (all collections), clips, archive, limited, flooded, revoked

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"} if who in self.tokens else {}


def _upload(stack: StackEndpoints, key: str, body: bytes) -> None:
    client = botocore.session.get_session().create_client(
        "s3",
        endpoint_url=stack.s3_endpoint_url,
        region_name="us-east-1",
        aws_access_key_id=stack.s3_access_key,
        aws_secret_access_key=stack.s3_secret_key,
    )
    client.put_object(Bucket=stack.bucket, Key=key, Body=body, ContentType="video/mp4")


async def _progress_and_keys(stack: StackEndpoints, prefix: str) -> dict[str, str]:
    redis = Redis.from_url(stack.redis_url)
    try:
        store = ProgressStore(redis, RedisKeys(prefix))
        await store.start(CAT.object_id, f"s3://{CAT.bucket}/{CAT.key}")
        await store.set_total(CAT.object_id, 2)
        keys = ApiKeyStore(redis, RedisKeys(prefix))
        tokens = {
            "every": (await keys.create(COLLECTIONS.names, "tests"))[1],
            "clips": (await keys.create(["clips"], "A"))[1],
            "archive": (await keys.create(["archive"], "B"))[1],
            "limited": (await keys.create(["clips"], "rate"))[1],
            "flooded": (await keys.create(["clips"], "flood"))[1],
        }
        revoked, tokens["revoked"] = await keys.create(["clips"], "gone")
        assert await keys.revoke(revoked.key_id)
        return tokens
    finally:
        await redis.aclose()


@contextmanager
def running_serve(stack: StackEndpoints, base: Path, env_extra: dict[str, str]) -> Iterator[Server]:
    """``capstream serve`` on a free port until the block ends; ``env_extra`` on top of the
    test settings (collections, the stack, the table)."""
    build_table(base / "index")
    assert CAT.bucket == stack.bucket
    _upload(stack, CAT.key, MEDIA)
    prefix = f"t{uuid.uuid4().hex[:8]}"
    tokens = asyncio.run(_progress_and_keys(stack, prefix))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAPSTREAM_", "AWS_"))}
    env |= (
        stack.env()
        | offline_env()
        | {
            "CAPSTREAM_HOME": str(base / "home"),
            "CAPSTREAM_INDEX_URI": str(base / "index"),
            "CAPSTREAM_INDEX_TABLE": TABLE,
            "CAPSTREAM_KEY_PREFIX": prefix,
            "CAPSTREAM_LOG_LEVEL": "WARNING",
            "CAPSTREAM_COLLECTIONS": COLLECTIONS_ENV,
        }
        | env_extra
    )
    log = (base / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers.cli.main", "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (base / "serve.log").read_text()[-3000:]
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "capstream serve did not come up"
            time.sleep(0.5)
        yield Server(url, prefix, base, tokens)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
