"""http(s) sources (issue 8, finding 4): every address the worker connects to is vetted,
redirects included, and CAPSTREAM_MAX_OBJECT_BYTES holds for them too."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from loadtest import media_factory as mf
from schemas.events import ObjectCreated
from workers.decode.dispatch import decode_segments
from workers.decode.http_reader import HttpReader, SourceUnreachable, open_http_source
from workers.decode.policy import SegmentPolicy
from workers.decode.source import ObjectSource
from workers.localstack import free_port
from workers.runtime.errors import PermanentError
from workers.runtime.failures import Failure, classify
from workers.settings import DecodeSettings


class _Server(http.server.BaseHTTPRequestHandler):
    """Serves `body` with byte ranges, or redirects to `redirect`; counts requests."""

    body = b""
    redirect = ""
    hits: list[str] = []

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        type(self).hits.append(self.path)
        if self.redirect:
            self.send_response(302)
            self.send_header("Location", self.redirect)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start, _, end = self.headers.get("Range", "bytes=0-").removeprefix("bytes=").partition("-")
        last = min(len(self.body) - 1, int(end) if end else len(self.body) - 1)
        chunk = self.body[int(start) : last + 1]
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{last}/{len(self.body)}")
        self.send_header("Content-Length", str(len(chunk)))
        self.end_headers()
        self.wfile.write(chunk)


def _serve(host: str, **attrs: Any) -> Iterator[tuple[int, type[_Server]]]:
    handler = type("Handler", (_Server,), {"hits": [], **attrs})
    server = http.server.ThreadingHTTPServer((host, 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_port, handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def clip(tmp_path: Path) -> bytes:
    path = tmp_path / "clip.mp4"
    mf.make_short_clip(path, 2.0)
    return path.read_bytes()


def _settings(**kw: Any) -> DecodeSettings:
    return DecodeSettings(allowed_schemes="http,https", http_allow_private=True, **kw)


async def test_http_source_decodes_through_the_vetted_reader(clip: bytes) -> None:
    for port, handler in _serve("127.0.0.1", body=clip):
        reader = await ObjectSource(_settings()).resolve(ObjectCreated(uri=f"http://localhost:{port}/clip.mp4"))
        assert isinstance(reader, HttpReader)
        with reader:
            segments = list(decode_segments(reader, SegmentPolicy(), name="clip"))
        assert segments[-1].end_s == pytest.approx(2.0, abs=0.05)
        assert all(path == "/clip.mp4" for path in handler.hits)
        assert reader.fetched <= 2 * len(clip)


async def test_redirect_to_the_metadata_address_is_refused() -> None:
    for port, handler in _serve("127.0.0.1", redirect="http://169.254.169.254/latest/meta-data/"):
        with pytest.raises(PermanentError) as info:
            await ObjectSource(_settings()).resolve(ObjectCreated(uri=f"http://127.0.0.1:{port}/a.mp4"))
        assert info.value.reason == "address_not_allowed"
        assert handler.hits == ["/a.mp4"]


def test_redirect_to_a_refused_address_sends_it_nothing(clip: bytes) -> None:
    # The first hop (127.0.0.1) is allowed, the redirect target (127.0.0.2) is not.
    for target_port, target in _serve("127.0.0.2", body=clip):
        for port, _ in _serve("127.0.0.1", redirect=f"http://127.0.0.2:{target_port}/clip.mp4"):
            with httpx.Client() as client, pytest.raises(PermanentError) as info:
                open_http_source(
                    client,
                    f"http://127.0.0.1:{port}/clip.mp4",
                    vet=lambda address: None if address == "127.0.0.1" else "refused by the test",
                    max_bytes=1 << 30,
                    shown="clip",
                )
            assert info.value.reason == "address_not_allowed"
            assert target.hits == []


async def test_object_over_the_size_cap_is_refused(clip: bytes) -> None:
    for port, handler in _serve("127.0.0.1", body=clip):
        source = ObjectSource(_settings(max_object_bytes=len(clip) - 1))
        with pytest.raises(PermanentError) as info:
            await source.resolve(ObjectCreated(uri=f"http://127.0.0.1:{port}/clip.mp4"))
        assert info.value.reason == "object_too_large"
        assert len(handler.hits) == 1  # one range request to learn the size, nothing more


async def test_an_unreachable_source_is_retried_then_dead_lettered_not_waited_on_forever() -> None:
    # Nothing listens on this port. httpx's ConnectError means "our model server is down" to the
    # loop (wait, never spend a try); for an event's own URL it must be an ordinary transient error.
    port = free_port()
    with pytest.raises(SourceUnreachable) as info:
        await ObjectSource(_settings()).resolve(ObjectCreated(uri=f"http://127.0.0.1:{port}/gone.mp4"))
    assert classify(info.value) is Failure.TRANSIENT


class _S3Refusing(http.server.BaseHTTPRequestHandler):
    """Answers every request like an S3 endpoint refusing it with a bare status (HEAD has no body)."""

    status = 400

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_HEAD(self) -> None:
        self.send_response(self.status)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.mark.parametrize(("status", "reason"), [(400, "invalid_request"), (404, "object_not_found")])
async def test_s3_head_client_errors_are_permanent(status: int, reason: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Only the classification of S3's answer is under test here; real S3 reads are in
    # tests/integration (SeaweedFS). SeaweedFS itself would not answer a HEAD with 400.
    handler = type("Handler", (_S3Refusing,), {"status": status})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    for name, value in (("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test")):
        monkeypatch.setenv(name, value)
    settings = DecodeSettings(s3_endpoint_url=f"http://127.0.0.1:{server.server_port}")
    source = ObjectSource(settings)
    try:
        await source.start()
        with pytest.raises(PermanentError) as info:
            await source.resolve(ObjectCreated(uri="s3://media/a.png", bucket="media", key="a.png", version_id="x"))
        assert info.value.reason == reason
    finally:
        await source.close()
        server.shutdown()
        server.server_close()
