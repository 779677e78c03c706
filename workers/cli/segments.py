"""``capstream segments FILE``: the segments and sampled frame times a file would produce under
the current decode settings (``CAPSTREAM_*`` env), without Kafka, so segmentation can be tuned.
A document (PDF, multi-page TIFF) lists its pages with the size each is rendered at."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from workers.decode.dispatch import decode_segments
from workers.decode.documents import DecodedPage
from workers.decode.errors import MediaError
from workers.decode.policy import SegmentPolicy
from workers.decode.sampling import DecodedSegment
from workers.decode.stage import segment_policy
from workers.settings import DecodeSettings


def segment_rows(path: Path, policy: SegmentPolicy) -> list[dict[str, Any]]:
    """One JSON-ready dict per segment: index, start_s, end_s, reason, frame_pts; pages also
    page_number and the rendered width and height."""
    # Speech chunks are not segments (``capstream segments`` tunes segmentation): audio is not read.
    segments = decode_segments(str(path), replace(policy, speech=None))
    return [_row(segment) for segment in segments if isinstance(segment, DecodedSegment)]


def _row(segment: DecodedSegment) -> dict[str, Any]:
    row: dict[str, Any] = {
        "index": segment.index,
        "start_s": segment.start_s,
        "end_s": segment.end_s,
        "reason": segment.reason,
        "frame_pts": [frame.pts_s for frame in segment.frames],
    }
    if isinstance(segment, DecodedPage):
        frame = segment.frames[0]
        row |= {"page_number": segment.page_number, "width": frame.width, "height": frame.height}
    return row


def cmd_segments(path: Path, as_json: bool) -> int:
    """Print the segments of `path`; exit 2 with a one-line reason when it cannot be decoded."""
    policy = segment_policy(DecodeSettings())
    started = time.perf_counter()
    try:
        rows = segment_rows(path, policy)
    except MediaError as exc:
        print(f"{path}: {exc.reason}: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"{path}: {exc.strerror}", file=sys.stderr)
        return 2
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    elapsed = time.perf_counter() - started
    if rows and "page_number" in rows[0]:
        print(f"{path}: {len(rows)} page(s) in {elapsed:.2f} s (page_max_pixels={policy.page_max_pixels})")
        print(f"{'#':>4}  {'page':>5}  rendered at")
        for row in rows:
            print(f"{row['index']:>4}  {row['page_number']:>5}  {row['width']}x{row['height']}")
        return 0
    print(
        f"{path}: {len(rows)} segment(s) in {elapsed:.2f} s "
        f"(policy={policy.mode}, threshold={policy.scene_threshold}, max_segment_s={policy.max_segment_s}, "
        f"min_scene_s={policy.min_scene_s}, sample_fps={policy.sample_fps}, "
        f"frames {policy.min_frames}..{policy.max_frames})"
    )
    print(f"{'#':>4}  {'start_s':>9}  {'end_s':>9}  {'reason':<6}  frames at (s)")
    for row in rows:
        times = " ".join(f"{t:.3f}" for t in row["frame_pts"])
        print(f"{row['index']:>4}  {row['start_s']:>9.3f}  {row['end_s']:>9.3f}  {row['reason']:<6}  {times}")
    return 0
