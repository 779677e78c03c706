"""The per-segment visual-token budget: frames at the model's 2 fps, sized so a segment fits
the budget as a Qwen3-VL video, and long scenes split instead of thinned.

Token counts come from Qwen3-VL's own video processor, configured with Qwen3-VL-4B-Instruct's
limits (the tiny test model mirrors them), not from our formula.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtest import media_factory as mf
from workers.decode.dispatch import decode_segments
from workers.decode.policy import SegmentPolicy
from workers.decode.sampling import DecodedSegment, frame_pixels, segment_window_s
from workers.decode.stage import segment_policy
from workers.models.tiny_qwen3_vl import (
    MERGE_SIZE,
    PATCH_SIZE,
    QWEN3_VL_4B_VIDEO_SIZE,
    TEMPORAL_PATCH_SIZE,
)
from workers.settings import DecodeSettings

BUDGET = 768


def video_tokens(segment: DecodedSegment) -> int:
    """Visual tokens Qwen3-VL-4B's video processor gives these frames."""
    from transformers import Qwen3VLVideoProcessor

    processor = Qwen3VLVideoProcessor(
        size=dict(QWEN3_VL_4B_VIDEO_SIZE),
        patch_size=PATCH_SIZE,
        merge_size=MERGE_SIZE,
        temporal_patch_size=TEMPORAL_PATCH_SIZE,
        cap_pixels_per_frame=False,
    )
    first = segment.frames[0]
    patches = processor.get_num_of_video_patches(len(segment.frames), first.height, first.width)
    return int(patches) // MERGE_SIZE**2


@pytest.fixture(scope="module")
def long_shot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One 10 s shot at 640x360: no cut to end a segment early."""
    path = tmp_path_factory.mktemp("budget") / "shot.mp4"
    mf.make_short_clip(path, 10.0, fps=24, size=(640, 360))
    return path


def test_budget_splits_a_long_scene_at_the_model_rate(long_shot: Path) -> None:
    policy = SegmentPolicy(sample_fps=2.0, max_frames=8, max_segment_s=10.0, visual_token_budget=BUDGET)
    segments = list(decode_segments(str(long_shot), policy))
    bounds = [t for s in segments for t in (s.start_s, s.end_s)]
    assert bounds == pytest.approx([0.0, 4.0, 4.0, 8.0, 8.0, 10.0], abs=0.05)
    for segment in segments:
        pts = [f.pts_s for f in segment.frames]
        assert all(abs(b - a - 0.5) < 0.05 for a, b in zip(pts, pts[1:], strict=False)), pts  # 2 fps kept
        assert len(pts) <= 8
        assert video_tokens(segment) <= BUDGET
    assert video_tokens(segments[0]) > BUDGET // 2  # the budget is used, not just respected


def test_without_a_budget_the_scene_is_thinned_instead(long_shot: Path) -> None:
    policy = SegmentPolicy(sample_fps=2.0, max_frames=8, max_segment_s=10.0)
    (segment,) = decode_segments(str(long_shot), policy)
    pts = [f.pts_s for f in segment.frames]
    assert len(pts) == 8 and pts[-1] - pts[0] > 8.0  # 8 frames over 10 s: below the model's rate


@pytest.mark.parametrize(("max_frames", "budget"), [(8, 768), (7, 768), (16, 768), (8, 64), (4, 4096)])
def test_frame_size_fits_the_budget(max_frames: int, budget: int) -> None:
    policy = SegmentPolicy(sample_fps=2.0, max_frames=max_frames, visual_token_budget=budget)
    pixels = frame_pixels(policy)
    assert pixels <= policy.max_pixels
    assert -(-max_frames // 2) * pixels // 1024 <= max(budget, -(-max_frames // 2))
    assert segment_window_s(policy) == min(policy.max_segment_s, max_frames / 2.0)


def test_settings_default_to_the_model_rate_and_a_budget() -> None:
    policy = segment_policy(DecodeSettings())
    assert policy.sample_fps == 2.0
    assert policy.visual_token_budget == BUDGET
    assert frame_pixels(policy) == 192 * 1024  # 4 temporal patches of 192 tokens
