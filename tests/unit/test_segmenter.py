"""The decode core on real (tiny) media: cuts, windows, sampling, sizes, budgets and bad input."""

from __future__ import annotations

import functools
import http.server
import io
import math
import os
import pickle
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageOps

from loadtest import media_factory as mf
from workers.decode import segmenter
from workers.decode.allowlist import FORMAT_WHITELIST
from workers.decode.container import URL_OPTIONS, MediaInfo, open_media, redact
from workers.decode.dispatch import decode_segments
from workers.decode.errors import MediaError
from workers.decode.frames import MIN_QUALITY, encode_jpeg, encode_within_budget, target_size, uniform_indices
from workers.decode.policy import SegmentPolicy
from workers.decode.sampling import DecodedSegment
from workers.decode.scenes import CutDetector

FPS = 24


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every file the tests need, built once (about 1.5 s)."""
    root = tmp_path_factory.mktemp("media")
    files: dict[str, Any] = {"root": root}
    files["montage"] = root / "montage.mp4"
    files["montage_cuts"] = mf.make_montage_video(files["montage"], mf.photos(4), 2.5, fps=FPS)
    files["clip"] = root / "clip.mp4"
    files["clip_frames"] = mf.make_short_clip(files["clip"], 5.0, fps=FPS)
    files["raw_h264"] = root / "raw.h264"  # elementary stream: no timestamps at all
    files["raw_cuts"] = mf.make_montage_video(files["raw_h264"], mf.photos(3), 1.5, fps=FPS)
    return files


def decode(source: Path | str, **policy: Any) -> list[DecodedSegment]:
    return list(decode_segments(str(source), SegmentPolicy(**policy)))


def jpeg_image(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "JPEG"
    image.load()
    return image


# --- segmentation ------------------------------------------------------------------------


def test_montage_cuts_at_photo_changes(media: dict[str, Any]) -> None:
    segments = decode(media["montage"])
    assert [s.reason for s in segments] == ["cut", "cut", "cut", "end"]
    assert [s.index for s in segments] == [0, 1, 2, 3]
    truth = media["montage_cuts"]
    for segment, cut in zip(segments, truth, strict=False):
        assert abs(segment.end_s - cut) <= 1 / FPS + 1e-6
    # Contiguous cover of the whole timeline, ending at the last frame's end.
    assert segments[0].start_s == 0.0
    for before, after in zip(segments, segments[1:], strict=False):
        assert after.start_s == before.end_s
    assert segments[-1].end_s == pytest.approx(4 * 2.5, abs=1e-6)


def test_cut_detector_separates_cuts_from_camera_motion(media: dict[str, Any]) -> None:
    import av

    detector = CutDetector(0.35)
    with av.open(str(media["montage"])) as container:
        distances = [detector.distance(frame) for frame in container.decode(video=0)]
    cut_frames = {round(t * FPS) for t in media["montage_cuts"]}
    cuts = [d for i, d in enumerate(distances) if i in cut_frames]
    others = [d for i, d in enumerate(distances) if i not in cut_frames]
    assert min(cuts) > 0.45 and max(others) < 0.15


def test_min_scene_suppresses_early_cuts(media: dict[str, Any]) -> None:
    segments = decode(media["montage"], min_scene_s=3.0)
    # Cuts at 2.5 and 7.5 are too close to their segment start; only 5.0 survives.
    assert [(s.start_s, s.end_s, s.reason) for s in segments] == [(0.0, 5.0, "cut"), (5.0, 10.0, "end")]


def test_long_scene_is_split_into_windows(media: dict[str, Any]) -> None:
    segments = decode(media["clip"], max_segment_s=2.0)
    assert [(s.start_s, s.end_s, s.reason) for s in segments] == [
        (0.0, 2.0, "window"),
        (2.0, 4.0, "window"),
        (4.0, 5.0, "end"),
    ]


def test_threshold_zero_gives_fixed_windows(media: dict[str, Any]) -> None:
    segments = decode(media["montage"], scene_threshold=0.0, max_segment_s=4.0)
    assert [(s.start_s, s.end_s, s.reason) for s in segments] == [
        (0.0, 4.0, "window"),
        (4.0, 8.0, "window"),
        (8.0, 10.0, "end"),
    ]


def test_missing_timestamps_fall_back_to_frame_rate(media: dict[str, Any]) -> None:
    segments = decode(media["raw_h264"])
    assert [s.reason for s in segments] == ["cut", "cut", "end"]
    assert [s.end_s for s in segments[:-1]] == pytest.approx(media["raw_cuts"], abs=1 / FPS + 1e-6)
    assert segments[-1].end_s == pytest.approx(4.5, abs=1e-6)


# --- sampling --------------------------------------------------------------------------------


def test_one_frame_per_second_starting_at_segment_start(media: dict[str, Any]) -> None:
    for segment in decode(media["montage"]):
        offsets = [f.pts_s - segment.start_s for f in segment.frames]
        assert offsets == pytest.approx([0.0, 1.0, 2.0], abs=1e-6)
        assert [f.index for f in segment.frames] == [0, 1, 2]


@pytest.mark.parametrize(("sample_fps", "max_frames", "expected"), [(1.0, 8, 5), (1.0, 3, 3), (4.0, 6, 6), (0.5, 8, 3)])
def test_frame_count_follows_sample_fps_and_max_frames(
    media: dict[str, Any], sample_fps: float, max_frames: int, expected: int
) -> None:
    (segment,) = decode(media["clip"], sample_fps=sample_fps, max_frames=max_frames)
    times = [f.pts_s for f in segment.frames]
    assert len(times) == expected
    assert times[0] == 0.0 and times == sorted(times)
    if expected > 2:  # thinned about uniformly
        gaps = np.diff(times)
        assert gaps.max() <= 2 * gaps.min() + 1e-6


def test_high_sample_rate_keeps_bounded_uniform_samples(media: dict[str, Any]) -> None:
    # 24 fps sampling over 5 s would be 120 candidates; only 2 * max_frames are ever held.
    (segment,) = decode(media["clip"], sample_fps=24.0, max_frames=4)
    times = [f.pts_s for f in segment.frames]
    assert len(times) == 4 and times[0] == 0.0
    assert np.diff(times).min() > 0.5


def test_uniform_indices() -> None:
    assert uniform_indices(10, 4) == [0, 3, 6, 9]
    assert uniform_indices(3, 8) == [0, 1, 2]
    assert uniform_indices(5, 1) == [0]
    for n in range(1, 40):
        for k in range(1, n + 1):
            chosen = uniform_indices(n, k)
            assert len(set(chosen)) == k and chosen == sorted(chosen)


# --- frame geometry and encoding -------------------------------------------------------------


@pytest.mark.parametrize(
    ("width", "height", "max_pixels"),
    [
        (320, 240, 448 * 448),
        (1920, 1080, 448 * 448),
        (1080, 1920, 448 * 448),
        (3840, 2160, 1280 * 28 * 28),
        (640, 480, 64 * 64),
        (500, 500, 448 * 448),
        (33, 47, 448 * 448),
    ],
)
def test_target_size_multiple_of_32_within_budget_aspect_kept(width: int, height: int, max_pixels: int) -> None:
    w, h = target_size(width, height, max_pixels)
    assert w % 32 == 0 and h % 32 == 0
    assert w * h <= max_pixels
    assert w <= max(32, width) and h <= max(32, height)
    assert abs(h - w * height / width) <= 32 and abs(w - h * width / height) <= 32


def test_target_size_extreme_aspect_stays_within_budget() -> None:
    w, h = target_size(20000, 20, 448 * 448)
    assert (h, w % 32) == (32, 0) and w * h <= 448 * 448
    assert target_size(10, 10, 448 * 448) == (32, 32)  # the only upscale: the 32 px floor


def test_frames_are_jpeg_at_declared_size(media: dict[str, Any]) -> None:
    max_pixels = 160 * 160
    for segment in decode(media["montage"], max_pixels=max_pixels):
        for frame in segment.frames:
            image = jpeg_image(frame.jpeg)
            assert image.size == (frame.width, frame.height) == (160, 128)
            assert image.mode == "RGB"
            assert frame.width * frame.height <= max_pixels


def test_tiny_byte_budget_is_honoured(media: dict[str, Any]) -> None:
    budget = 6_000
    segments = decode(media["clip"], max_segment_bytes=budget, sample_fps=2.0)
    for segment in segments:
        assert 1 <= len(segment.frames)
        assert sum(len(f.jpeg) for f in segment.frames) <= budget
        assert segment.frames[0].pts_s == segment.start_s
        for frame in segment.frames:
            assert jpeg_image(frame.jpeg).size == (frame.width, frame.height)


def test_budget_lowers_quality_before_dropping_frames() -> None:
    images = [(float(i), Image.fromarray(mf.resized(p, (320, 224)))) for i, p in enumerate(mf.photos(4))]
    full = encode_within_budget(images, 85, 10_000_000)
    total = sum(len(f.jpeg) for f in full)
    squeezed = encode_within_budget(images, 85, int(total * 0.7))
    assert len(squeezed) == 4 and sum(len(f.jpeg) for f in squeezed) <= total * 0.7
    lowest = [len(encode_jpeg(image, MIN_QUALITY)) for _, image in images]
    dropped = encode_within_budget(images, 85, sum(lowest) - 1)
    assert len(dropped) == 3 and sum(len(f.jpeg) for f in dropped) < sum(lowest)
    assert dropped[0].pts_s == 0.0 and dropped[-1].pts_s == 3.0
    (shrunk,) = encode_within_budget(images, 85, 5_000)
    assert len(shrunk.jpeg) <= 5_000 and shrunk.width < 320 and shrunk.width % 32 == 0


def test_display_rotation_is_applied(tmp_path: Path) -> None:
    path = tmp_path / "rotated.mp4"
    mf.make_short_clip(path, 0.5, rotation=90)
    (segment,) = decode(path)
    frame = segment.frames[0]
    assert (frame.width, frame.height) == (224, 320)  # 320x240 landscape shown as portrait


def test_exif_orientation_matches_pillow(tmp_path: Path) -> None:
    path = tmp_path / "exif.jpg"
    image = Image.fromarray(mf.resized(mf.photo("astronaut"), (256, 128)))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    image.save(path, exif=exif, quality=95)
    (segment,) = decode(path)
    ours = np.asarray(jpeg_image(segment.frames[0].jpeg), dtype=np.float64)
    reference = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    assert reference.size == (128, 256) == (segment.frames[0].width, segment.frames[0].height)
    assert np.abs(ours - np.asarray(reference, dtype=np.float64)).mean() < 12


# --- stills and animations -------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "alpha"), [("JPEG", False), ("PNG", True), ("WEBP", False), ("BMP", False)])
def test_still_image_is_one_segment_one_frame(tmp_path: Path, fmt: str, alpha: bool) -> None:
    path = tmp_path / f"still.{fmt.lower()}"
    mf.make_image(path, fmt, size=(320, 240), alpha=alpha)
    infos: list[MediaInfo] = []
    segments = list(decode_segments(str(path), SegmentPolicy(), on_info=infos.append))
    assert infos[0].kind == "image" and (infos[0].width, infos[0].height) == (320, 240)
    (segment,) = segments
    assert (segment.index, segment.start_s, segment.end_s, segment.reason) == (0, 0.0, 0.0, "end")
    (frame,) = segment.frames
    image = jpeg_image(frame.jpeg)
    assert (frame.index, frame.pts_s, image.size) == (0, 0.0, (320, 224))
    if alpha:  # the transparent left half is shown over white, not black
        left = np.asarray(image)[:, : 320 // 2 - 8]
        assert left.mean() > 245


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animated_image_behaves_as_video(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"anim.{fmt.lower()}"
    cuts = mf.make_animated_image(path, fmt, mf.photos(3), frames_each=6, frame_ms=200)
    infos: list[MediaInfo] = []
    segments = list(decode_segments(str(path), SegmentPolicy(), on_info=infos.append))
    assert infos[0].kind == "video"
    assert [s.reason for s in segments] == ["cut", "cut", "end"]
    assert [s.end_s for s in segments[:-1]] == pytest.approx(cuts, abs=1e-6)
    assert segments[-1].end_s == pytest.approx(3 * 6 * 0.2, abs=1e-6)
    assert all(f.width == 160 and f.height == 96 for s in segments for f in s.frames)


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["garbage", "truncated"])
def test_corrupt_file_is_corrupt_media(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"{kind}.mp4"
    mf.make_corrupt_file(path, kind)
    with pytest.raises(MediaError) as info:
        decode(path)
    assert info.value.reason == "corrupt_media"
    assert str(path) in str(info.value)


def test_no_decodable_frame_is_corrupt_media(tmp_path: Path) -> None:
    path = tmp_path / "zeroed.mp4"
    mf.make_corrupt_file(path, "undecodable")
    with pytest.raises(MediaError, match="zero frames") as info:
        decode(path)
    assert info.value.reason == "corrupt_media"


def test_damaged_packets_are_skipped_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "damaged.mp4"
    mf.make_corrupt_file(path, "damaged")
    segments = decode(path, max_segment_s=1.0)
    # Whatever decodes is kept on its true timeline; the stream still ends at 2 s.
    assert segments and segments[-1].reason == "end"
    assert segments[-1].end_s == pytest.approx(2.0, abs=1e-6)
    assert all(s.frames for s in segments)


def test_empty_file_is_corrupt_media(tmp_path: Path) -> None:
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    with pytest.raises(MediaError, match="not a readable media file") as info:
        decode(path)
    assert info.value.reason == "corrupt_media"


@pytest.mark.parametrize("suffix", [".m4a", ".mp3"])
def test_audio_only_is_no_video_stream(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"tone{suffix}"
    mf.make_audio_only(path)
    with pytest.raises(MediaError) as info:
        decode(path)
    assert info.value.reason == "no_video_stream"
    assert "audio" in str(info.value)


def test_limits_are_checked_before_decoding(media: dict[str, Any]) -> None:
    seen: list[MediaInfo] = []
    with pytest.raises(MediaError) as too_long:
        next(decode_segments(str(media["clip"]), SegmentPolicy(max_duration_s=4.0), on_info=seen.append))
    assert too_long.value.reason == "media_too_long" and not seen
    with pytest.raises(MediaError) as too_big:
        next(decode_segments(str(media["clip"]), SegmentPolicy(max_source_pixels=320 * 239)))
    assert too_big.value.reason == "resolution_too_large"


def test_media_error_pickles_and_prints_its_message() -> None:
    error = pickle.loads(pickle.dumps(MediaError("corrupt_media", "broken")))
    assert (error.reason, error.message, str(error)) == ("corrupt_media", "broken", "broken")


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="sample_fps"):
        SegmentPolicy(sample_fps=0)
    with pytest.raises(ValueError, match="max_segment_bytes"):
        SegmentPolicy(max_segment_bytes=100)


# --- sources ---------------------------------------------------------------------------------


def test_redact_drops_signature_and_credentials() -> None:
    url = "https://user:pw@s3.example.com/bucket/a%20b.mp4?X-Amz-Signature=abc&X-Amz-Credential=k"
    assert redact(url) == "https://s3.example.com/bucket/a%20b.mp4"
    assert redact("/data/x.mp4") == "/data/x.mp4"


def test_url_options_are_merged_for_urls_only(monkeypatch: pytest.MonkeyPatch, media: dict[str, Any]) -> None:
    calls: list[dict[str, Any]] = []
    real_open = segmenter.av.open

    def spy(source: str, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return real_open(str(media["montage"]), **{**kwargs, "options": {}})

    monkeypatch.setattr(segmenter.av, "open", spy)
    open_media("https://example.com/x.mp4?sig=1", options={"request_size": "1048576"}, timeout_s=7).close()
    open_media(str(media["montage"])).close()
    remote, local = calls
    assert remote["timeout"] == (7, 7)
    allow = {"format_whitelist": FORMAT_WHITELIST, "enable_drefs": "0", "max_pixels": str(8192 * 8192)}
    assert remote["options"] == {
        **URL_OPTIONS,
        **allow,
        "protocol_whitelist": "http,https,tcp,tls",
        "request_size": "1048576",
    }
    assert local["options"] == {**allow, "protocol_whitelist": "file"}
    with pytest.raises(ValueError, match="scheme"):
        open_media("s3://bucket/key.mp4")


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Just enough of S3's GET: byte ranges, 206, 404."""

    ranges: list[str] = []

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        path = self.translate_path(self.path.split("?")[0])
        if not os.path.isfile(path):
            self.send_error(404)
            return
        size = os.path.getsize(path)
        start, end = 0, size - 1
        header = self.headers.get("Range")
        if header and (match := re.match(r"bytes=(\d+)-(\d*)", header)):
            start = int(match.group(1))
            end = min(size - 1, int(match.group(2))) if match.group(2) else size - 1
            self.ranges.append(header)
        with open(path, "rb") as handle:
            handle.seek(start)
            body = handle.read(end - start + 1)
        self.send_response(206 if header else 200)
        self.send_header("Accept-Ranges", "bytes")
        if header:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def http_root(media: dict[str, Any]) -> Iterator[str]:
    handler = functools.partial(_RangeHandler, directory=str(media["root"]))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_decodes_from_url_with_range_requests(http_root: str, media: dict[str, Any]) -> None:
    _RangeHandler.ranges.clear()
    segments = decode(f"{http_root}/montage.mp4?X-Amz-Signature=secret")
    assert [s.reason for s in segments] == ["cut", "cut", "cut", "end"]
    assert _RangeHandler.ranges and _RangeHandler.ranges[0] == "bytes=0-65535"  # initial_request_size


def test_url_errors_propagate_without_the_signature(http_root: str) -> None:
    import av

    with pytest.raises(av.error.HTTPNotFoundError) as info:
        decode(f"{http_root}/missing.mp4?X-Amz-Signature=secret")
    assert "secret" not in str(info.value) and "missing.mp4" in str(info.value)


class _ReadTracker(io.RawIOBase):
    """A local file that records how far into it the demuxer has read (as from an HttpReader)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self._file = path.open("rb")
        self.furthest = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._file.readinto(buffer)
        self.furthest = max(self.furthest, self._file.tell())
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def close(self) -> None:
        self._file.close()
        super().close()


def test_segments_stream_before_the_end(tmp_path: Path) -> None:
    """The first of eight equal scenes is handed out having read about a quarter of the file
    (measured 0.25: the scene, the frames the threaded decoder holds, read-ahead), not all of it."""
    path = tmp_path / "eight-scenes.mp4"  # index first, so reading the index is not reading the end
    cuts = mf.make_montage_video(path, mf.photos(8), 2.5, fps=FPS, container_options={"movflags": "faststart"})
    size = path.stat().st_size
    with _ReadTracker(path) as source:
        generator = decode_segments(source, SegmentPolicy(), name=path.name)
        first = next(generator)
        read_for_first = source.furthest
        rest = list(generator)
        assert source.furthest == size, "the tracker sees every read"
    assert first.reason == "cut" and math.isclose(first.end_s, cuts[0])
    assert len(rest) == 7
    assert read_for_first <= 0.4 * size, f"read {read_for_first} of {size} bytes for the first of 8 scenes"
