"""SSRF through the media itself (issue 8, finding 4): formats that open other resources
(playlists, manifests, concat lists, text rendering) are refused before FFmpeg reads them.

Each playlist points at a local listener that counts requests: zero may arrive. The sources
are opened through decode_segments, the entry point the decode worker uses, from a file
path and from an http URL shaped like a presigned S3 URL.
"""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loadtest import media_factory as mf
from workers.decode.dispatch import decode_segments
from workers.decode.errors import MediaError
from workers.decode.policy import SegmentPolicy


class _Counter(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.hits.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def _serve(handler: Any) -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def listener() -> Iterator[int]:
    """Port of a listener standing in for loopback services and the metadata endpoint."""
    _Counter.hits = []
    yield from _serve(_Counter)


@pytest.fixture
def bucket(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A directory served over http, like an S3 bucket behind presigned URLs."""
    root = tmp_path / "bucket"
    root.mkdir()
    for port in _serve(functools.partial(_Quiet, directory=str(root))):
        yield root, f"http://127.0.0.1:{port}"


def _hls(port: int) -> str:
    return (
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n"
        f"#EXTINF:2.0,\nhttp://127.0.0.1:{port}/latest/meta-data/iam/seg0.ts\n"
        f"#EXTINF:2.0,\nhttp://127.0.0.1:{port}/seg1.ts\n#EXT-X-ENDLIST\n"
    )


def _dash(port: int) -> str:
    return (
        '<?xml version="1.0"?>\n<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" '
        'mediaPresentationDuration="PT2S" minBufferTime="PT1S" profiles="urn:mpeg:dash:profile:isoff-on-demand:2011">'
        f'<BaseURL>http://127.0.0.1:{port}/</BaseURL><Period><AdaptationSet mimeType="video/mp4">'
        '<Representation id="1" bandwidth="1000" width="320" height="240" codecs="avc1.64001e">'
        "<BaseURL>seg.mp4</BaseURL></Representation></AdaptationSet></Period></MPD>\n"
    )


def _concat(port: int) -> str:
    return f"ffconcat version 1.0\nfile 'http://127.0.0.1:{port}/a.mp4'\nfile 'http://127.0.0.1:{port}/b.mp4'\n"


REFERENCING = {"list.m3u8": _hls, "manifest.mpd": _dash, "list.ffconcat": _concat}
# FFmpeg's dash demuxer does not recognise this minimal manifest at all: "not media" is a
# refusal too; what matters is that nothing was fetched.
_REFUSAL = {"list.m3u8": "unsupported_media", "manifest.mpd": "corrupt_media", "list.ffconcat": "unsupported_media"}


@pytest.mark.parametrize("name", sorted(REFERENCING))
def test_referencing_formats_from_a_url_fetch_nothing(bucket: tuple[Path, str], listener: int, name: str) -> None:
    root, base = bucket
    (root / name).write_text(REFERENCING[name](listener))
    with pytest.raises(MediaError) as info:
        list(decode_segments(f"{base}/{name}?X-Amz-Signature=secret", SegmentPolicy()))
    assert _Counter.hits == []
    assert info.value.reason == _REFUSAL[name], info.value.message
    assert "secret" not in info.value.message


@pytest.mark.parametrize("name", sorted(REFERENCING))
def test_referencing_formats_from_a_file_fetch_nothing(tmp_path: Path, listener: int, name: str) -> None:
    path = tmp_path / name
    path.write_text(REFERENCING[name](listener))
    with pytest.raises(MediaError) as info:
        list(decode_segments(str(path), SegmentPolicy()))
    assert _Counter.hits == []
    assert info.value.reason == _REFUSAL[name], info.value.message


def test_playlist_of_local_files_is_not_followed(tmp_path: Path) -> None:
    # A playlist may name files next to it (or anywhere the worker can read): never opened.
    mf.make_short_clip(tmp_path / "secret.ts", 0.5)
    (tmp_path / "list.m3u8").write_text("#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:0.5,\nsecret.ts\n#EXT-X-ENDLIST\n")
    with pytest.raises(MediaError) as info:
        list(decode_segments(str(tmp_path / "list.m3u8"), SegmentPolicy()))
    assert info.value.reason == "unsupported_media"


def test_text_is_not_rendered_as_video(tmp_path: Path) -> None:
    # FFmpeg's tty demuxer turns any .txt/.nfo into video of the text.
    path = tmp_path / "notes.txt"
    path.write_text("aws_secret_access_key = not-really\n" * 50)
    with pytest.raises(MediaError) as info:
        list(decode_segments(str(path), SegmentPolicy()))
    assert info.value.reason == "unsupported_media", info.value.message


@pytest.mark.parametrize("suffix", [".jpg", ".jpeg", ".png", ".JPG"])
def test_image_extensions_do_not_pick_the_file_sequence_demuxer(tmp_path: Path, suffix: str) -> None:
    # image2 (file sequences) is off; a still must still open, by its content.
    path = tmp_path / f"still{suffix}"
    mf.make_image(path, "JPEG")
    (segment,) = decode_segments(str(path), SegmentPolicy())
    assert len(segment.frames) == 1


def test_jpeg_by_presigned_url_with_an_extension(bucket: tuple[Path, str]) -> None:
    # The query string of a presigned URL keeps FFmpeg from probing by extension.
    root, base = bucket
    mf.make_image(root / "still.jpg", "JPEG")
    (segment,) = decode_segments(f"{base}/still.jpg?X-Amz-Signature=x", SegmentPolicy())
    assert len(segment.frames) == 1
