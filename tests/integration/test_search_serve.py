"""``capstream serve`` as a subprocess (offline MiniLM on vLLM, the test stack's Redis and S3,
a LanceDB table in a tmp dir): the JSON API, then the page in headless Chromium."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import botocore.session
import httpx
import pytest
from redis.asyncio import Redis

from tests.search_fixtures import DOCS, TABLE, build_table
from workers.localstack import StackEndpoints, free_port
from workers.offline_profile import offline_env
from workers.state import ProgressStore, RedisKeys

pytestmark = pytest.mark.e2e  # the real vLLM MiniLM engine embeds the queries

ROOT = Path(__file__).resolve().parents[2]
CAT = next(d for d in DOCS if d.key == "clips/cat.mp4" and d.index == 0)
MEDIA = b"not really a video, but the bytes the link must return"
HIT_FIELDS = {"object_id", "segment_id", "uri", "bucket", "key", "start_s", "end_s", "caption", "score"}
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@dataclass
class Server:
    url: str
    prefix: str
    artifacts: Path


def _upload(stack: StackEndpoints, key: str, body: bytes) -> None:
    client = botocore.session.get_session().create_client(
        "s3",
        endpoint_url=stack.s3_endpoint_url,
        region_name="us-east-1",
        aws_access_key_id=stack.s3_access_key,
        aws_secret_access_key=stack.s3_secret_key,
    )
    client.put_object(Bucket=stack.bucket, Key=key, Body=body)


async def _progress(stack: StackEndpoints, prefix: str) -> None:
    redis = Redis.from_url(stack.redis_url)
    try:
        store = ProgressStore(redis, RedisKeys(prefix))
        await store.start(CAT.object_id, f"s3://{CAT.bucket}/{CAT.key}")
        await store.set_total(CAT.object_id, 2)
    finally:
        await redis.aclose()


@pytest.fixture(scope="module")
def server(stack: StackEndpoints, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("serve")
    build_table(base / "index")
    assert CAT.bucket == stack.bucket
    _upload(stack, CAT.key, MEDIA)
    prefix = f"t{uuid.uuid4().hex[:8]}"
    asyncio.run(_progress(stack, prefix))
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
        }
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
        yield Server(url, prefix, base)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_healthz_and_openapi(server: Server) -> None:
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok", "indexed_rows": len(DOCS)}
    spec = httpx.get(f"{server.url}/openapi.json").json()
    assert {"/search", "/objects/{object_id}", "/thumbnails/{segment_id}", "/healthz"} <= set(spec["paths"])
    params = {p["name"] for p in spec["paths"]["/search"]["get"]["parameters"]}
    assert {"q", "k", "mode", "bucket", "prefix"} <= params


def test_search_json_and_media_link(server: Server) -> None:
    resp = httpx.get(f"{server.url}/search", params={"q": "a kitten playing with yarn", "k": 3}, timeout=60)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["mode"] == "hybrid" and body["truncated"] is False and len(body["hits"]) == 3
    top = body["hits"][0]
    assert HIT_FIELDS <= set(top) and top["segment_id"] == CAT.segment_id
    assert top["media_url"].endswith("#t=0.000,5.000")
    media = httpx.get(top["media_url"].split("#", 1)[0])  # the presigned link really serves the object
    assert media.status_code == 200 and media.content == MEDIA
    thumb = httpx.get(f"{server.url}{top['thumbnail_url']}")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert thumb.content[:3] == b"\xff\xd8\xff"

    filtered = httpx.get(f"{server.url}/search", params={"q": "market", "bucket": "archive", "mode": "text"}).json()
    assert filtered["hits"] and {h["bucket"] for h in filtered["hits"]} == {"archive"}
    long_q = httpx.get(f"{server.url}/search", params={"q": "kitten " + "very " * 2000, "k": 1}, timeout=60).json()
    # Cut to the model's limit, the query is "kitten" and 255 x "very": a kitten hit still leads.
    assert long_q["truncated"] is True and long_q["hits"][0]["object_id"] == CAT.object_id
    assert httpx.get(f"{server.url}/search", params={"q": "  "}).status_code == 422


def test_objects_progress_and_segments(server: Server) -> None:
    body = httpx.get(f"{server.url}/objects/{CAT.object_id}").json()
    assert body["progress"]["state"] == "decoded" and body["progress"]["segments_total"] == 2
    assert [s["segment_index"] for s in body["indexed"]] == [0, 1]
    assert body["indexed"][0]["segment_id"] == CAT.segment_id and body["indexed"][0]["end_s"] == 5.0
    assert httpx.get(f"{server.url}/objects/{uuid.uuid4()}").status_code == 404
    assert httpx.get(f"{server.url}/thumbnails/not-a-uuid").status_code == 404


def test_page_in_headless_chromium(server: Server) -> None:
    # A missing browser is a failed setup, not a skip: `make test` installs both (system-deps).
    assert shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER), "chromium/chromedriver missing: run `make install`"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1100,900",
        f"--user-data-dir={server.artifacts / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.get(server.url + "/")
        box = driver.find_element(By.ID, "q")
        box.send_keys("a kitten playing with yarn")
        box.submit()
        hits = WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#hits .hit"))
        WebDriverWait(driver, 30).until(
            lambda d: all(
                d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img)
                for img in d.find_elements(By.CSS_SELECTOR, "#hits .hit img")
            )
        )
        assert len(hits) >= 3
        first = hits[0]
        assert CAT.caption in first.text
        assert "0:00.0–0:05.0" in first.text  # the time range
        link = first.find_element(By.CSS_SELECTOR, "a.open")
        assert "#t=0.000,5.000" in (link.get_attribute("href") or "")
        for hit in hits:
            img = hit.find_element(By.TAG_NAME, "img")
            assert driver.execute_script("return arguments[0].naturalWidth", img) > 0
            assert hit.find_element(By.CSS_SELECTOR, ".caption").text
            assert "#t=" in (hit.find_element(By.CSS_SELECTOR, "a.open").get_attribute("href") or "")
        assert "hits (hybrid" in driver.find_element(By.ID, "status").text
        driver.save_screenshot(str(server.artifacts / "search-page.png"))
    finally:
        driver.quit()
