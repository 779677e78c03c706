"""``capstream serve`` as a subprocess (offline MiniLM on vLLM, the test stack's Redis and S3,
a LanceDB table in a tmp dir): API keys scoped to collections over every route, the JSON API,
then the page in headless Chromium with a key."""

from __future__ import annotations

import functools
import json
import shutil
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import lancedb
import pytest

from tests.search_fixtures import COLLECTIONS, DOCS, TABLE, Doc, rows
from tests.serve_process import CAT, CAT_LATER, MEDIA, STOCK, Server, running_serve
from workers.access.api_keys import FAILED_CHECKS_PER_MIN
from workers.localstack import StackEndpoints

pytestmark = pytest.mark.e2e  # the real vLLM MiniLM engine embeds the queries

HIT_FIELDS = {"object_id", "segment_id", "uri", "bucket", "key", "start_s", "end_s", "caption", "score", "collection"}
RATE_LIMIT = 60
MAX_DEPTH = 50
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def server(stack: StackEndpoints, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {
        "CAPSTREAM_SERVE_RATE_LIMIT_PER_MIN": str(RATE_LIMIT),
        "CAPSTREAM_SEARCH_MAX_DEPTH": str(MAX_DEPTH),
        # The name a browser uses for the store: links must be signed for it, and work.
        "CAPSTREAM_SEARCH_PUBLIC_S3_ENDPOINT_URL": stack.s3_endpoint_url.replace("127.0.0.1", "localhost"),
    }
    with running_serve(stack, tmp_path_factory.mktemp("serve"), env) as server:
        yield server


def test_healthz_and_openapi(server: Server) -> None:
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok", "indexed_rows": len(DOCS), "auth": True}
    spec = httpx.get(f"{server.url}/openapi.json", headers=server.auth("every")).json()
    assert {"/search", "/objects/{object_id}", "/thumbnails/{segment_id}", "/healthz"} <= set(spec["paths"])
    params = {p["name"] for p in spec["paths"]["/search"]["get"]["parameters"]}
    assert {"q", "k", "mode", "bucket", "prefix"} <= params


def test_search_json_and_media_link(server: Server) -> None:
    every = server.auth("every")
    resp = httpx.get(
        f"{server.url}/search", params={"q": "a kitten playing with yarn", "k": 3}, headers=every, timeout=60
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["mode"] == "hybrid" and body["truncated"] is False and len(body["hits"]) == 3
    top = body["hits"][0]
    assert HIT_FIELDS <= set(top) and top["segment_id"] == CAT.segment_id
    assert top["media_url"].endswith("#t=0.000,5.000") and top["media_url"].startswith("http://localhost:")
    media = httpx.get(top["media_url"].split("#", 1)[0])  # the presigned link really serves the object
    assert media.status_code == 200 and media.content == MEDIA
    thumb = httpx.get(f"{server.url}{top['thumbnail_url']}", headers=every)
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert thumb.headers["x-content-type-options"] == "nosniff" and "private" in thumb.headers["cache-control"]
    assert thumb.content[:3] == b"\xff\xd8\xff"

    filtered = httpx.get(
        f"{server.url}/search", params={"q": "market", "bucket": "archive", "mode": "text"}, headers=every
    ).json()
    assert filtered["hits"] and {h["bucket"] for h in filtered["hits"]} == {"archive"}
    long_q = httpx.get(
        f"{server.url}/search", params={"q": "kitten " + "very " * 2000, "k": 1}, headers=every, timeout=60
    ).json()
    # Cut to the model's limit, the query is "kitten" and 255 x "very": a kitten hit still leads.
    assert long_q["truncated"] is True and long_q["hits"][0]["object_id"] == CAT.object_id
    assert httpx.get(f"{server.url}/search", params={"q": "  "}, headers=every).status_code == 422


def test_objects_progress_and_segments(server: Server) -> None:
    every = server.auth("every")
    body = httpx.get(f"{server.url}/objects/{CAT.object_id}", headers=every).json()
    assert body["progress"]["state"] == "decoded" and body["progress"]["segments_total"] == 2
    assert [s["segment_index"] for s in body["indexed"]] == [0, 1]
    assert body["indexed"][0]["segment_id"] == CAT.segment_id and body["indexed"][0]["end_s"] == 5.0
    assert httpx.get(f"{server.url}/objects/{uuid.uuid4()}", headers=every).status_code == 404
    assert httpx.get(f"{server.url}/thumbnails/not-a-uuid", headers=every).status_code == 404


def test_an_object_carries_its_summary_and_chapters_that_open_the_media(server: Server) -> None:
    body = httpx.get(f"{server.url}/objects/{CAT.object_id}", headers=server.auth("every")).json()
    summary = body["summary"]
    assert summary["summary"] == "A kitten plays with yarn, then naps."
    chapters = summary["chapters"]
    assert [(c["start_s"], c["end_s"]) for c in chapters] == [
        (CAT.start_s, CAT.end_s),
        (CAT_LATER.start_s, CAT_LATER.end_s),
    ]
    for c in chapters:
        assert c["media_url"].endswith(f"#t={c['start_s']:.3f},{c['end_s']:.3f}")
    assert (
        httpx.get(f"{server.url}/objects/{STOCK.object_id}", headers=server.auth("archive")).json()["summary"] is None
    )


@pytest.mark.parametrize("who, sees_cat", [("every", True), ("clips", True), ("archive", False)])
def test_object_search_ranks_objects_with_their_summaries_in_scope(server: Server, who: str, sees_cat: bool) -> None:
    resp = httpx.get(
        f"{server.url}/search/objects", params={"q": "a kitten playing with yarn", "k": 3}, headers=server.auth(who)
    )
    assert resp.status_code == 200, resp.text
    hits = resp.json()["hits"]
    assert len({h["object_id"] for h in hits}) == len(hits) and 1 <= len(hits) <= 3
    assert all(len(h["moments"]) <= 3 and h["moments"][0]["score"] == h["score"] for h in hits)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    first = hits[0]
    if sees_cat:
        assert first["object_id"] == CAT.object_id and first["summary"].startswith("A kitten")
        assert [c["start_s"] for c in first["chapters"]] == [CAT.start_s, CAT_LATER.start_s]
    else:
        assert CAT.object_id not in {h["object_id"] for h in hits}
        assert all(h["summary"] is None for h in hits)


# -- authorization matrix: key A (clips), key B (archive), a revoked key, no key, a forged key --
NO_ACCESS = ["none", "revoked", "forged"]


@pytest.mark.parametrize(
    "route",
    ["/search?q=kitten", "/search/objects?q=kitten", f"/objects/{CAT.object_id}", "/thumbnails/{cat}", "/openapi.json"],
)
@pytest.mark.parametrize("who", NO_ACCESS)
def test_no_valid_key_gets_401_on_every_data_route(server: Server, route: str, who: str) -> None:
    headers = server.auth(who)
    if who == "forged":  # a well-formed token of a real key id with another secret
        headers = {"Authorization": server.auth("clips")["Authorization"][:-4] + "AAAA"}
    resp = httpx.get(server.url + route.format(cat=CAT.segment_id), headers=headers, timeout=60)
    assert resp.status_code == 401, resp.text
    assert resp.headers["www-authenticate"].startswith("Bearer")
    assert httpx.get(f"{server.url}/healthz", headers=headers).status_code == 200  # the one open route


@pytest.mark.parametrize(
    ("who", "query", "hidden"),
    [("clips", "stock market traders kitten", "archive"), ("archive", "kitten yarn sofa skiers", "clips")],
)
def test_search_sees_only_the_keys_collections(server: Server, who: str, query: str, hidden: str) -> None:
    for mode in ("hybrid", "text", "vector"):
        body = httpx.get(
            f"{server.url}/search",
            params={"q": query, "k": 50, "mode": mode, "per_object": 0},
            headers=server.auth(who),
            timeout=60,
        ).json()
        assert body["hits"], (who, mode)
        assert {h["collection"] for h in body["hits"]} == {who}, (who, mode)
        wanted = {d.segment_id for d in DOCS if COLLECTIONS.of(d.bucket, d.key) == who}
        assert {h["segment_id"] for h in body["hits"]} <= wanted
        for hit in body["hits"]:  # links only to the key's own objects
            assert hit["media_url"] is None or f"/{hit['bucket']}/" in hit["media_url"]
            assert COLLECTIONS.of(hit["bucket"], hit["key"]) != hidden


def test_objects_and_thumbnails_of_another_collection_are_404(server: Server) -> None:
    a, b = server.auth("clips"), server.auth("archive")
    assert httpx.get(f"{server.url}/objects/{CAT.object_id}", headers=a).status_code == 200
    other = httpx.get(f"{server.url}/objects/{CAT.object_id}", headers=b)
    missing = httpx.get(f"{server.url}/objects/{uuid.uuid4()}", headers=b)
    assert other.status_code == missing.status_code == 404 and other.json() == missing.json()  # no existence leak
    assert httpx.get(f"{server.url}/objects/{STOCK.object_id}", headers=b).status_code == 200
    assert httpx.get(f"{server.url}/objects/{STOCK.object_id}", headers=a).status_code == 404
    assert httpx.get(f"{server.url}/thumbnails/{CAT.segment_id}", headers=a).status_code == 200
    assert httpx.get(f"{server.url}/thumbnails/{CAT.segment_id}", headers=b).status_code == 404
    assert httpx.get(f"{server.url}/thumbnails/{STOCK.segment_id}", headers=a).status_code == 404


def test_pages_are_stable_under_concurrent_inserts(server: Server) -> None:
    every = server.auth("every")
    params = {"q": "a chef cooking in a kitchen", "k": 3, "per_object": 0}

    def page(cursor: str | None = None, headers: dict[str, str] = every, **extra: object) -> httpx.Response:
        return httpx.get(
            f"{server.url}/search",
            params={**params, **extra, **({"cursor": cursor} if cursor else {})},
            headers=headers,
            timeout=60,
        )

    first = page().json()
    assert len(first["hits"]) == 3 and first["next_cursor"]
    # A new row that matches the query better than anything, indexed between two pages.
    newcomer = Doc("media", "long/new-kitchen.mp4", 0, "A chef cooking in a kitchen, a chef cooking in a kitchen.")
    lancedb.connect(str(server.artifacts / "index")).open_table(TABLE).add(rows([newcomer]))
    second = page(first["next_cursor"]).json()
    third = page(second["next_cursor"]).json()
    shown = [h["segment_id"] for p in (first, second, third) for h in p["hits"]]
    assert len(shown) == len(set(shown)) == 9, "a hit repeated across pages"
    assert newcomer.segment_id not in shown, "a row indexed after the first page moved the pages"
    again = page(first["next_cursor"]).json()["hits"]  # the same page again (links are signed anew)
    assert [(h["segment_id"], h["score"]) for h in again] == [(h["segment_id"], h["score"]) for h in second["hits"]]
    assert page().json()["hits"][0]["segment_id"] == newcomer.segment_id  # a new query sees it

    assert page(first["next_cursor"], headers=server.auth("clips")).status_code == 410  # another key's cursor
    assert page("not-a-cursor").status_code == 410
    mismatch = page(first["next_cursor"], q="boats")
    assert mismatch.status_code == 422 and "another query" in mismatch.json()["detail"]


def test_other_host_names_are_refused(server: Server) -> None:
    # DNS rebinding: a site whose name resolves to 127.0.0.1 sends its own name as Host.
    assert httpx.get(f"{server.url}/healthz", headers={"Host": "rebound.example"}).status_code == 400
    assert httpx.get(f"{server.url}/healthz", headers={"Host": "localhost"}).status_code == 200


def test_limits_say_which(server: Server) -> None:
    every = server.auth("every")
    url = f"{server.url}/search"
    too_long = httpx.get(url, params={"q": "x" * 16_385}, headers=every)
    assert too_long.status_code == 422 and "q is longer than 16384" in too_long.json()["detail"]
    for name, value in (("k", 201), ("bucket", "b" * 1025), ("prefix", "p" * 1025), ("object_id", "o" * 1025)):
        resp = httpx.get(url, params={"q": "x", name: value}, headers=every)
        assert resp.status_code == 422 and resp.json()["detail"][0]["loc"] == ["query", name], (name, resp.text)
    deep = httpx.get(url, params={"q": "x", "k": MAX_DEPTH + 1}, headers=every)
    assert deep.status_code == 422 and f"at most {MAX_DEPTH} hits" in deep.json()["detail"]


def test_a_flood_of_wrong_secrets_is_refused_without_hashing(server: Server) -> None:
    url, real = f"{server.url}/objects/{CAT.object_id}", server.auth("flooded")
    assert httpx.get(url, headers=real).status_code == 200  # verified once: remembered
    forged = {
        "Authorization": real["Authorization"][:-4] + ("AAAA" if not real["Authorization"].endswith("AAAA") else "BBBB")
    }
    codes = [httpx.get(url, headers=forged).status_code for _ in range(FAILED_CHECKS_PER_MIN)]
    over = httpx.get(url, headers=forged)
    if over.status_code != 429:  # the minute turned during the burst
        codes = [httpx.get(url, headers=forged).status_code for _ in range(FAILED_CHECKS_PER_MIN)]
        over = httpx.get(url, headers=forged)
    assert set(codes) <= {401, 429} and over.status_code == 429 and int(over.headers["retry-after"]) >= 1
    assert httpx.get(url, headers=real).status_code == 200  # the key's holder is not locked out


def test_a_key_over_its_rate_limit_gets_429_with_retry_after(server: Server) -> None:
    url, headers = f"{server.url}/objects/{uuid.uuid4()}", server.auth("limited")
    codes = [httpx.get(url, headers=headers).status_code for _ in range(RATE_LIMIT)]
    over = httpx.get(url, headers=headers)
    # The window may turn over during the burst: then the 61st is still a 404 and one more try is over.
    if over.status_code != 429:
        over = next(r for r in (httpx.get(url, headers=headers) for _ in range(RATE_LIMIT)) if r.status_code == 429)
    assert set(codes) <= {404, 429} and over.status_code == 429
    assert 1 <= int(over.headers["retry-after"]) <= 60
    assert httpx.get(url, headers=server.auth("clips")).status_code == 404  # other keys are not limited


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
        box.submit()  # without a key: refused
        WebDriverWait(driver, 30).until(lambda d: "API key is required" in d.find_element(By.ID, "status").text)
        assert not driver.find_elements(By.CSS_SELECTOR, "#hits .hit")
        assert not driver.find_element(By.ID, "noauth").is_displayed()
        driver.find_element(By.ID, "key").send_keys(server.tokens["every"])
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
            href = hit.find_element(By.CSS_SELECTOR, "a.open").get_attribute("href") or ""
            if "annual-report.pdf" in hit.text:  # a document page: shown and opened as its page
                assert "page 3" in hit.text and href.endswith("#page=3")
            else:
                assert "#t=" in href
        assert "hits (hybrid" in driver.find_element(By.ID, "status").text

        # The object's chapters, opened under its first hit: each opens the media at its start.
        first.find_element(By.CSS_SELECTOR, "details.chapters summary").click()
        chapters = WebDriverWait(driver, 30).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, "#hits .hit details.chapters a.chapter")
        )
        assert "A kitten plays with yarn" in first.find_element(By.CSS_SELECTOR, "details.chapters").text
        hrefs = [c.get_attribute("href") or "" for c in chapters]
        assert hrefs[0].endswith(f"#t={CAT.start_s:.3f},{CAT.end_s:.3f}")
        assert hrefs[1].endswith(f"#t={CAT_LATER.start_s:.3f},{CAT_LATER.end_s:.3f}")
        driver.save_screenshot(str(server.artifacts / "search-page.png"))

        # The Ask box: the answer arrives over server-sent events and cites retrieved moments.
        driver.find_element(By.ID, "question").send_keys("What is the kitten doing?")
        driver.find_element(By.ID, "question").submit()

        def answered(d: Any) -> str | None:
            text: str = d.find_element(By.ID, "answer-status").text
            return text if "cited" in text or "error" in text else None

        status = WebDriverWait(driver, 240).until(answered)
        assert "moments" in status and "error" not in status, status
        assert driver.find_element(By.CSS_SELECTOR, "#answer .text").text
        for cite in driver.find_elements(By.CSS_SELECTOR, "#answer a.cite"):
            href = cite.get_attribute("href") or ""
            assert ("#t=" in href or "#page=" in href) and cite.text.startswith("[m")

        # A later moment's link opens the object in this browser at that moment, through the
        # public endpoint the link was signed for (localhost, not the store's 127.0.0.1).
        box.clear()
        box.send_keys(CAT_LATER.caption)
        box.submit()
        later = f"{CAT_LATER.start_s:.3f},{CAT_LATER.end_s:.3f}"
        href = WebDriverWait(driver, 60).until(
            lambda d: next(
                (
                    h
                    for a in d.find_elements(By.CSS_SELECTOR, "#hits .hit a.open")
                    if (h := a.get_attribute("href") or "").endswith(f"#t={later}")
                ),
                None,
            )
        )
        assert href.startswith("http://localhost:"), href
        driver.get(href)
        video = WebDriverWait(driver, 30).until(
            lambda d: d.execute_script(
                "const v = document.querySelector('video');"
                "return v && v.readyState >= 1 ? [v.currentTime, v.duration, v.error && v.error.code] : null"
            )
        )
        current, duration, error = video
        assert error is None and duration == pytest.approx(12, abs=0.6)
        assert CAT_LATER.start_s <= current <= CAT_LATER.end_s + 0.1, video
    finally:
        driver.quit()


# -- ask: answers that cite retrieved moments (the tiny Qwen3-VL on vLLM, in serve's process) --
def ask_events(server: Server, who: str, body: dict[str, object]) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    with httpx.stream("POST", f"{server.url}/ask", json=body, headers=server.auth(who), timeout=300) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        name = ""
        for line in resp.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((name, json.loads(line.removeprefix("data: "))))
    return events


def test_ask_streams_moments_then_an_answer_that_cites_only_them(server: Server) -> None:
    events = ask_events(server, "every", {"question": "What is the kitten doing?", "k": 4})
    assert [name for name, _ in events] == ["moments", "answer", "done"], events
    moments = events[0][1]["moments"]
    answer = events[1][1]
    assert 1 <= len(moments) <= 4 and [m["id"] for m in moments] == [m["id"] for m in answer["moments"]]
    given = {m["id"]: m for m in answer["moments"]}
    for cited in answer["citations"]:  # guided decoding: a citation can only name a given moment
        assert cited["id"] in given and cited == given[cited["id"]]
    for m in answer["moments"]:  # each moment is its indexed segment, at its times
        indexed = httpx.get(f"{server.url}/objects/{m['object_id']}", headers=server.auth("every")).json()["indexed"]
        segment = next(seg for seg in indexed if seg["segment_id"] == m["segment_id"])
        assert (m["start_s"], m["end_s"]) == (segment["start_s"], segment["end_s"])
        at = f"#page={m['page_number']}" if m["page_number"] else f"#t={m['start_s']:.3f},{m['end_s']:.3f}"
        assert m["media_url"].endswith(at)
    # The prompt carried the moments' frames (their thumbnails), counted as visual tokens.
    assert all(m["with_frame"] for m in answer["moments"] if m["modality"] != "speech")
    assert answer["timings"]["visual_tokens"] > 0 and answer["timings"]["model_ms"] > 0
    assert answer["cut_off"] or isinstance(answer["found"], bool)


def test_ask_is_scoped_and_refuses_bad_requests(server: Server) -> None:
    events = ask_events(server, "clips", {"question": "stock market traders", "k": 6})
    assert {COLLECTIONS.of_uri(m["uri"]) for m in events[0][1]["moments"]} <= {"clips"}
    post = functools.partial(httpx.post, f"{server.url}/ask", timeout=60)
    assert post(json={"question": "kitten"}).status_code == 401
    assert post(json={"question": "   "}, headers=server.auth("clips")).status_code == 422
    other = post(json={"question": "market", "object_id": STOCK.object_id}, headers=server.auth("clips"))
    assert other.status_code == 404  # another collection's object, as if it did not exist


def test_a_question_about_a_pdf_page_is_answered_from_that_page(server: Server) -> None:
    report = next(d for d in DOCS if d.page_number == 3)
    hits = httpx.get(
        f"{server.url}/search", params={"q": "revenue table annual report", "k": 1}, headers=server.auth("clips")
    ).json()["hits"]
    assert hits[0]["segment_id"] == report.segment_id and hits[0]["page_number"] == 3
    assert hits[0]["media_url"].endswith("#page=3")  # opens the document at its page
    events = ask_events(server, "clips", {"question": "What was the revenue?", "object_id": report.object_id})
    answer = events[1][1]
    [moment] = answer["moments"]
    assert moment["page_number"] == 3 and moment["media_url"].endswith("#page=3")
    # The tiny random model may or may not cite it; whatever it cites is that page.
    assert all(c["page_number"] == 3 for c in answer["citations"])
