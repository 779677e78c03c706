"""Timed frames -> closed segments of sampled JPEG frames: where segments end and which frames they keep.

Every frame feeds a cheap cut detector; a segment closes on a hard cut (no closer than
`min_scene_s` to its start), when it reaches the window length, or at the end of the media.
With a visual-token budget (`SegmentPolicy.visual_token_budget`) the window is at most
`max_frames` at `sample_fps`, and frames are sized so that many fit the budget as one Qwen3-VL
video (two frames per grid of 32x32 px tokens): a long scene is split rather than sampled
below the model's rate, and no segment costs the model more than the budget.
Within a segment, frames are kept on a sampling grid (`sample_fps`) with spares for segments
too short for `min_frames`; only kept frames are converted to RGB at the model's size, and
they are JPEG-encoded only when the segment closes. A segment is yielded as soon as it
closes, so memory stays bounded by one segment whatever the media's length. Each frame is
also checked here against the resolution and duration limits and charged to the decode budget,
since this is the one place that sees every frame.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final, Literal

from av.video.reformatter import VideoReformatter
from PIL import Image

from workers.decode.budget import DecodeBudget
from workers.decode.container import MediaInfo, check_resolution
from workers.decode.errors import MediaError
from workers.decode.frames import display_size, encode_within_budget, frame_to_image, target_size, uniform_indices
from workers.decode.packets import PacketFeed
from workers.decode.policy import SegmentPolicy
from workers.decode.scenes import CutDetector
from workers.decode.thumbnail import make_thumbnail
from workers.decode.timeline import DecodeStats, TimedFrame

_EPS: Final = 1e-6
PIXELS_PER_VISUAL_TOKEN: Final = 32 * 32  # Qwen3-VL: 16 px patches, merged 2x2
VIDEO_TEMPORAL_PATCH: Final = 2  # Qwen3-VL: consecutive video frames share one token grid


def segment_window_s(policy: SegmentPolicy) -> float:
    """Longest segment: `max_segment_s`, and with a budget no more than `max_frames` samples."""
    if not policy.visual_token_budget:
        return policy.max_segment_s
    return min(policy.max_segment_s, policy.max_frames / policy.sample_fps)


def frame_pixels(policy: SegmentPolicy) -> int:
    """Pixels per frame: `max_pixels`, and with a budget no more than `max_frames` frames fit."""
    if not policy.visual_token_budget:
        return policy.max_pixels
    temporal_patches = -(-policy.max_frames // VIDEO_TEMPORAL_PATCH)
    per_patch = policy.visual_token_budget // temporal_patches * PIXELS_PER_VISUAL_TOKEN
    return max(PIXELS_PER_VISUAL_TOKEN, min(policy.max_pixels, per_patch))


@dataclass(frozen=True)
class SegmentFrame:
    """One sampled frame: `pts_s` on the media timeline, JPEG at `width` x `height`."""

    index: int
    pts_s: float
    width: int
    height: int
    jpeg: bytes


@dataclass(frozen=True)
class DecodedSegment:
    """Frames of [start_s, end_s); a still image is one segment with start_s == end_s == 0."""

    index: int
    start_s: float
    end_s: float
    reason: Literal["cut", "window", "end"]
    frames: tuple[SegmentFrame, ...]
    thumbnail: bytes = b""  # small JPEG of the middle sample (workers.decode.thumbnail)


class _OpenSegment:
    """Samples of the segment being built: the first frame at or after each grid point
    start + k / sample_fps.

    Until the segment holds `min_frames` samples, frames at the points of a finer grid (the
    interval over the next power of two >= min_frames) are kept as spares, so a segment too
    short for `min_frames` grid samples still gets them, spread over its length.
    """

    def __init__(self, index: int, start_s: float, policy: SegmentPolicy) -> None:
        self.index = index
        self.start_s = start_s
        self.interval = 1.0 / policy.sample_fps
        self.min_frames = policy.min_frames
        self.spare_interval = self.interval / (1 << (policy.min_frames - 1).bit_length())
        self.next_sample_s = start_s
        self.next_spare_s = start_s
        # Twice the final count is enough to thin uniformly without holding a long segment.
        self.capacity = 2 * policy.max_frames
        self.samples: list[tuple[float, Image.Image]] = []
        self.spares: list[tuple[float, Image.Image]] = []

    @property
    def short(self) -> bool:
        return len(self.samples) < self.min_frames

    @property
    def next_wanted_s(self) -> float:
        """Time of the next frame this segment would keep."""
        return min(self.next_sample_s, self.next_spare_s) if self.short else self.next_sample_s

    def wants(self, t: float) -> bool:
        return t >= self.next_wanted_s - _EPS

    def add(self, t: float, image: Image.Image) -> None:
        if t >= self.next_sample_s - _EPS:
            self.samples.append((t, image))
            if len(self.samples) > self.capacity:
                # Halve the density and keep the grid, so the kept samples stay evenly spaced.
                self.samples = self.samples[::2]
                self.interval *= 2
            steps = math.floor((t - self.start_s) / self.interval + _EPS) + 1
            self.next_sample_s = self.start_s + steps * self.interval
            if not self.short:
                self.spares.clear()
        else:
            self.spares.append((t, image))
            if len(self.spares) > self.capacity:
                self.spares = self.spares[::2]
        steps = math.floor((t - self.start_s) / self.spare_interval + _EPS) + 1
        self.next_spare_s = self.start_s + steps * self.spare_interval

    def close(
        self,
        end_s: float,
        reason: Literal["cut", "window", "end"],
        policy: SegmentPolicy,
        start_s: float | None = None,
    ) -> DecodedSegment:
        chosen = self.samples
        if self.short and self.spares:
            pool = sorted(self.samples + self.spares, key=lambda sample: sample[0])
            chosen = [pool[i] for i in uniform_indices(len(pool), self.min_frames)]
        chosen = [chosen[i] for i in uniform_indices(len(chosen), policy.max_frames)]
        encoded = encode_within_budget(chosen, policy.jpeg_quality, policy.max_segment_bytes)
        frames = tuple(SegmentFrame(i, _round_time(f.pts_s), f.width, f.height, f.jpeg) for i, f in enumerate(encoded))
        start = self.start_s if start_s is None else start_s
        thumbnail = make_thumbnail(chosen[len(chosen) // 2][1]) if chosen else b""
        return DecodedSegment(self.index, _round_time(start), _round_time(end_s), reason, frames, thumbnail)


def _round_time(t: float) -> float:
    # Microseconds: below any container's resolution, and hides float noise from extrapolated pts.
    return round(t, 6)


def sample_segments(
    frames: Iterable[TimedFrame],
    policy: SegmentPolicy,
    info: MediaInfo,
    shown: str,
    stats: DecodeStats,
    feed: PacketFeed | None = None,
    budget: DecodeBudget | None = None,
) -> Iterator[DecodedSegment]:
    """Cut `frames` into segments and yield each as it closes; the last one closes at the end.

    With a `feed`, tells it after every frame which media time the next useful frame is at,
    so packets nobody needs are never decoded.
    """
    detector = CutDetector(policy.scene_threshold if policy.detects_cuts else 0.0)
    window_s = segment_window_s(policy)
    pixels = frame_pixels(policy)
    reformatter = VideoReformatter()
    sizes: dict[tuple[int, int, int], tuple[int, int]] = {}
    current: _OpenSegment | None = None
    last: TimedFrame | None = None
    for item in frames:
        width, height = (item.frame.width, item.frame.height)
        check_resolution(width, height, policy, shown)
        if budget is not None:
            budget.charge(width * height, item.t)
        if item.t > policy.max_duration_s:
            raise MediaError(
                "media_too_long",
                f"{shown}: decoding passed {policy.max_duration_s:.0f} s, the duration limit",
            )
        try:
            distance = detector.distance(item.frame)
        except ValueError as exc:  # av.error.ValueError: swscale has no path for this pixel format
            raise MediaError("unsupported_media", f"{shown}: cannot convert frame ({exc})") from exc
        if current is None:
            current = _OpenSegment(0, item.t, policy)
        else:
            elapsed = item.t - current.start_s
            reason: Literal["cut", "window"] | None = None
            if detector.is_cut(distance) and elapsed >= policy.min_scene_s - _EPS:
                reason = "cut"
            elif elapsed >= window_s - _EPS:
                reason = "window"
            if reason is not None:
                yield current.close(item.t, reason, policy)
                current = _OpenSegment(current.index + 1, item.t, policy)
        if current.wants(item.t):
            key = (width, height, item.rotation)
            if key not in sizes:
                sizes[key] = target_size(*display_size(width, height, item.rotation), pixels)
            try:
                image = frame_to_image(item.frame, sizes[key], item.rotation, reformatter)
            except ValueError as exc:
                raise MediaError("unsupported_media", f"{shown}: cannot convert frame ({exc})") from exc
            current.add(item.t, image)
        last = item
        if feed is not None:
            # The first frame at or after either time is the next one that matters: a sample,
            # or the frame that opens the next window.
            feed.wanted_s = min(current.next_wanted_s, current.start_s + window_s)
    if current is None or last is None:
        detail = f"; {stats.decode_errors} packet(s) failed, first: {stats.first_error}" if stats.decode_errors else ""
        raise MediaError(
            "corrupt_media",
            f"{shown}: {info.codec} stream decoded to zero frames (no decodable picture{detail})",
        )
    if info.kind == "image" and stats.frames == 1:
        yield current.close(0.0, "end", policy, start_s=0.0)
        return
    end_s = last.t + last.duration
    if feed is not None and feed.mode != "dense":
        end_s = max(end_s, feed.end_s)  # the frames after the last wanted one were not decoded
    yield current.close(end_s, "end", policy)
