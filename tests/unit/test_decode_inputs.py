"""Odd inputs through the decode core: variable frame rate, negative and missing timestamps,
non-yuv420 pixel formats, 10-bit, interlaced, CMYK JPEG, animations and audio-only files."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from PIL import Image

from loadtest import media_factory as mf
from workers.decode.dispatch import decode_segments
from workers.decode.errors import MediaError
from workers.decode.policy import SegmentPolicy
from workers.decode.sampling import DecodedSegment

FPS = 24
SIZE = (320, 240)
FRAME = (320, 224)  # SIZE within the default pixel budget, on Qwen3-VL's 32 px grid


def decode(source: Path, **policy: Any) -> list[DecodedSegment]:
    return list(decode_segments(str(source), SegmentPolicy(**policy)))


def bounds(segments: list[DecodedSegment]) -> list[float]:
    return [t for s in segments for t in (s.start_s, s.end_s)]


def rgb(jpeg: bytes) -> np.ndarray[Any, np.dtype[np.float64]]:
    image = Image.open(io.BytesIO(jpeg))
    assert image.format == "JPEG" and image.mode == "RGB"
    return np.asarray(image, dtype=np.float64)


def first_pixel_format(path: Path) -> tuple[str, bool]:
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        return frame.format.name, bool(frame.interlaced_frame)


def assert_cuts(segments: list[DecodedSegment], truth: list[float], tolerance: float) -> None:
    assert [s.reason for s in segments] == ["cut"] * len(truth) + ["end"]
    assert [s.end_s for s in segments[:-1]] == pytest.approx(truth, abs=tolerance)
    for before, after in zip(segments, segments[1:], strict=False):
        assert after.start_s == before.end_s


def test_variable_frame_rate_keeps_true_times(tmp_path: Path) -> None:
    path = tmp_path / "vfr.mp4"
    durations = [5, 10, 20, 10, 15]  # ticks of 1/240 s: frames last 21-83 ms, in a cycle
    truth = mf.make_montage_video(path, mf.photos(3), 2.0, fps=FPS, frame_durations=durations)
    longest = max(durations) / (FPS * 10)
    segments = decode(path)
    assert_cuts(segments, truth, longest + 1e-6)
    for segment in segments:  # the first frame at or after each 1 s grid point
        offsets = np.array([f.pts_s - segment.start_s for f in segment.frames])
        grid = np.arange(len(offsets), dtype=np.float64)
        assert np.all(offsets >= grid - 1e-6) and np.all(offsets < grid + longest)


@pytest.mark.parametrize("mode", ["scene", "fixed"])
def test_negative_timestamps_start_the_timeline_at_zero(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "negative.ts"
    truth = mf.make_montage_video(
        path, mf.photos(3), 1.5, fps=FPS, first_pts=-FPS, container_options={"avoid_negative_ts": "disabled"}
    )
    with av.open(str(path)) as container:
        assert container.start_time is not None and container.start_time < 0  # really negative
    segments = decode(path, mode=mode, max_segment_s=2.0)
    assert segments[0].start_s == 0.0 and segments[0].frames[0].pts_s == 0.0
    assert segments[-1].end_s == pytest.approx(4.5, abs=1e-6)
    if mode == "scene":
        assert_cuts(segments, truth, 1 / FPS + 1e-6)
    else:
        assert bounds(segments) == pytest.approx([0.0, 2.0, 2.0, 4.0, 4.0, 4.5])


def test_missing_timestamps_in_fixed_mode_decode_densely(tmp_path: Path) -> None:
    # A raw H.264 stream has no pts at all: packets cannot be placed, so none are skipped.
    path = tmp_path / "raw.h264"
    mf.make_montage_video(path, mf.photos(2), 1.5, fps=FPS)
    fixed = decode(path, mode="fixed", max_segment_s=1.0)
    dense = decode(path, scene_threshold=0.0, max_segment_s=1.0)
    assert [(s.start_s, s.end_s, s.reason) for s in fixed] == [
        (0.0, 1.0, "window"),
        (1.0, 2.0, "window"),
        (2.0, 3.0, "end"),
    ]
    assert [[f.pts_s for f in s.frames] for s in fixed] == [[f.pts_s for f in s.frames] for s in dense]


@pytest.mark.parametrize(
    ("codec", "pix_fmt", "suffix", "decoded_as"),
    [
        ("libx264", "yuv444p", "mp4", "yuv444p"),
        ("libx264", "yuv420p10le", "mp4", "yuv420p10le"),  # High 10 profile
        ("libx264", "yuv422p10le", "mp4", "yuv422p10le"),
        ("libx264rgb", "rgb24", "mp4", "gbrp"),  # planar RGB
        ("ffv1", "gray", "mkv", "gray"),
    ],
)
def test_pixel_formats_decode_to_true_colours(
    tmp_path: Path, codec: str, pix_fmt: str, suffix: str, decoded_as: str
) -> None:
    path = tmp_path / f"{pix_fmt}.{suffix}"
    images = mf.photos(2)
    truth = mf.make_montage_video(path, images, 1.5, fps=FPS, codec=codec, pix_fmt=pix_fmt, pan=False)
    assert first_pixel_format(path)[0] == decoded_as
    segments = decode(path)
    assert_cuts(segments, truth, 1 / FPS + 1e-6)
    for segment, image in zip(segments, images, strict=True):
        expected = mf.resized(image, FRAME).astype(np.float64)
        if pix_fmt == "gray":
            expected = np.repeat(expected @ [0.299, 0.587, 0.114], 3).reshape(expected.shape)
        ours = rgb(segment.frames[0].jpeg)
        assert ours.shape == (FRAME[1], FRAME[0], 3)
        assert np.abs(ours - expected).mean() < 16  # a wrong bit depth or channel order is > 60


def test_interlaced_h264(tmp_path: Path) -> None:
    path = tmp_path / "interlaced.mp4"
    options = {"flags": "+ilme+ildct", "x264-params": "interlaced=1:tff=1:bframes=2"}
    truth = mf.make_montage_video(path, mf.photos(3), 1.5, fps=FPS, options=options)
    assert first_pixel_format(path) == ("yuv420p", True)
    segments = decode(path)
    assert_cuts(segments, truth, 1 / FPS + 1e-6)
    assert [len(s.frames) for s in segments] == [2, 2, 2]
    assert all((f.width, f.height) == FRAME for s in segments for f in s.frames)


def test_cmyk_jpeg_is_converted_to_rgb(tmp_path: Path) -> None:
    path = tmp_path / "cmyk.jpg"
    source = mf.make_cmyk_jpeg(path, size=SIZE)
    assert Image.open(path).mode == "CMYK"
    (segment,) = decode(path)
    (frame,) = segment.frames
    ours = rgb(frame.jpeg)
    # Pillow's own CMYK->RGB is the reference: what a viewer of the file shows.
    reference = np.asarray(Image.open(path).convert("RGB").resize(FRAME, Image.Resampling.BOX), dtype=np.float64)
    assert np.abs(ours - reference).mean() < 12
    assert np.abs(ours - mf.resized(source, FRAME)).mean() < 40  # not inverted (an inverted one is > 100)


@pytest.mark.parametrize("mode", ["fixed", "keyframe"])
@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animations_are_video_in_every_mode(tmp_path: Path, fmt: str, mode: str) -> None:
    path = tmp_path / f"anim.{fmt.lower()}"
    mf.make_animated_image(path, fmt, mf.photos(2), frames_each=5, frame_ms=200)
    segments = decode(path, mode=mode, max_segment_s=1.0)
    assert bounds(segments) == pytest.approx([0.0, 1.0, 1.0, 2.0])
    assert all(len(s.frames) == 1 and s.frames[0].width == 160 for s in segments)


@pytest.mark.parametrize("mode", ["scene", "fixed", "keyframe"])
def test_audio_only_is_a_clear_error_in_every_mode(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "tone.m4a"
    mf.make_audio_only(path)
    with pytest.raises(MediaError, match=r"has no video or image stream \(streams: audio:aac\)") as info:
        decode(path, mode=mode)
    assert info.value.reason == "no_video_stream"
