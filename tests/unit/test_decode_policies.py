"""Segmentation policies (scene, fixed, keyframe), sparse decoding and min/max frames per segment."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError
from structlog.testing import capture_logs

from loadtest import media_factory as mf
from workers.decode.dispatch import decode_segments
from workers.decode.packets import PacketFeed
from workers.decode.policy import SegmentPolicy
from workers.decode.sampling import DecodedSegment
from workers.decode.stage import segment_policy
from workers.settings import DecodeSettings

FPS = 24
KEYINT = 12  # a keyframe every 0.5 s, as phone cameras and streaming encoders do (1-2 s)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("policies")
    files: dict[str, Any] = {}
    files["montage"] = root / "montage.mp4"  # 4 photographs x 2.5 s, short GOPs
    files["cuts"] = mf.make_montage_video(files["montage"], mf.photos(4), 2.5, fps=FPS, keyint=KEYINT)
    return files


def decode(source: Path, **policy: Any) -> list[DecodedSegment]:
    return list(decode_segments(str(source), SegmentPolicy(**policy)))


def decoded(source: Path, **policy: Any) -> tuple[list[DecodedSegment], dict[str, Any]]:
    """Segments plus the decoder's own account (frames decoded, packets skipped)."""
    with capture_logs() as logs:
        segments = decode(source, **policy)
    (summary,) = [entry for entry in logs if entry["event"] == "media_decoded"]
    return segments, summary


def layout(segments: list[DecodedSegment]) -> list[tuple[float, float, str, list[float]]]:
    return [(s.start_s, s.end_s, s.reason, [f.pts_s for f in s.frames]) for s in segments]


def pixels(jpeg: bytes) -> np.ndarray[Any, np.dtype[np.float64]]:
    return np.asarray(Image.open(io.BytesIO(jpeg)), dtype=np.float64)


def test_scene_policy_finds_each_cut_within_one_frame(media: dict[str, Any]) -> None:
    segments, summary = decoded(media["montage"], mode="scene")
    assert [s.reason for s in segments] == ["cut", "cut", "cut", "end"]
    assert [s.end_s for s in segments[:-1]] == pytest.approx(media["cuts"], abs=1 / FPS + 1e-6)
    assert [len(s.frames) for s in segments] == [3, 3, 3, 3]
    assert summary["frames"] == 4 * 60 and summary["packets_skipped"] == 0  # it must see every frame


def test_fixed_policy_ignores_cuts_and_skips_gops(media: dict[str, Any]) -> None:
    fixed, summary = decoded(media["montage"], mode="fixed", max_segment_s=4.0)
    dense = decode(media["montage"], mode="scene", scene_threshold=0.0, max_segment_s=4.0)
    # Same boundaries, same sample times, same pictures as decoding every frame ...
    assert layout(fixed) == layout(dense)
    assert layout(fixed) == [
        (0.0, 4.0, "window", [0.0, 1.0, 2.0, 3.0]),
        (4.0, 8.0, "window", [4.0, 5.0, 6.0, 7.0]),
        (8.0, 10.0, "end", [8.0, 9.0]),
    ]
    for a, b in zip(fixed, dense, strict=True):
        for fa, fb in zip(a.frames, b.frames, strict=True):
            assert np.abs(pixels(fa.jpeg) - pixels(fb.jpeg)).mean() < 1.0
    # ... from a fraction of the frames: 10 samples, each a keyframe's GOP decoded up to it.
    assert summary["frames"] <= 240 // 3 and summary["packets_skipped"] >= 240 * 2 // 3


def test_keyframe_policy_decodes_keyframes_only(media: dict[str, Any]) -> None:
    segments, summary = decoded(media["montage"], mode="keyframe", max_segment_s=4.0, sample_fps=4.0)
    assert summary["frames"] == 240 // KEYINT
    times = [f.pts_s for s in segments for f in s.frames]
    assert times == pytest.approx([k * KEYINT / FPS for k in range(20)])  # every keyframe, none between
    assert [(s.start_s, s.end_s, s.reason) for s in segments] == [
        (0.0, 4.0, "window"),
        (4.0, 8.0, "window"),
        (8.0, 10.0, "end"),  # the end of the last frame, though it was never decoded
    ]


def test_min_frames_samples_short_segments_between_grid_points(media: dict[str, Any]) -> None:
    # 0.5 fps gives a 2.5 s scene two frames (0, 2); min_frames=4 adds a 0.5 s grid of spares.
    for mode, expected_ends in (("scene", [2.5, 5.0, 7.5, 10.0]), ("fixed", [2.5, 5.0, 7.5, 10.0])):
        segments = decode(media["montage"], mode=mode, max_segment_s=2.5, sample_fps=0.5, min_frames=4)
        assert [s.end_s for s in segments] == pytest.approx(expected_ends, abs=1 / FPS + 1e-6)
        for segment in segments:
            offsets = [f.pts_s - segment.start_s for f in segment.frames]
            assert offsets == pytest.approx([0.0, 0.5, 1.5, 2.0], abs=1 / FPS + 1e-6)  # 4 of 0, 0.5 .. 2.0


def test_min_frames_does_not_add_frames_to_long_segments(media: dict[str, Any]) -> None:
    segments = decode(media["montage"], sample_fps=1.0, min_frames=2, max_frames=3)
    assert [len(s.frames) for s in segments] == [3, 3, 3, 3]
    assert [f.pts_s - segments[0].start_s for f in segments[0].frames] == pytest.approx([0.0, 1.0, 2.0])


def test_max_frames_caps_every_policy(media: dict[str, Any]) -> None:
    for mode in ("scene", "fixed", "keyframe"):
        segments = decode(media["montage"], mode=mode, sample_fps=8.0, max_frames=5)
        assert segments and all(1 <= len(s.frames) <= 5 for s in segments)


def test_packet_feed_drops_gops_without_a_wanted_frame(media: dict[str, Any]) -> None:
    with av.open(str(media["montage"])) as container:
        stream = container.streams.video[0]
        feed = PacketFeed(container.demux(stream), "sparse", 0.0)
        feed.wanted_s = 9.0  # only the last GOP but one holds it
        kept = [p for p in feed if p.size]
    assert kept[0].is_keyframe and float(kept[0].pts * kept[0].time_base) == pytest.approx(9.0)
    assert len(kept) == 2 * KEYINT  # the GOP of 9.0 s and the last, whose pts are all >= 9.0
    assert feed.skipped == 240 - len(kept)
    assert feed.end_s == pytest.approx(10.0)


def test_settings_select_the_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    assert segment_policy(DecodeSettings()).mode == "scene"
    monkeypatch.setenv("CAPSTREAM_SEGMENT_POLICY", "keyframe")
    monkeypatch.setenv("CAPSTREAM_MIN_FRAMES", "3")
    policy = segment_policy(DecodeSettings())
    assert (policy.mode, policy.min_frames) == ("keyframe", 3)
    monkeypatch.setenv("CAPSTREAM_SEGMENT_POLICY", "shots")
    with pytest.raises(ValidationError, match="segment_policy"):
        DecodeSettings()


def test_policy_rejects_min_frames_above_max_frames() -> None:
    with pytest.raises(ValueError, match="min_frames"):
        SegmentPolicy(min_frames=9, max_frames=8)
