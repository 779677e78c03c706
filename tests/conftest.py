"""Shared fixtures: a real local stack (Tansu broker, redis-server, SeaweedFS) on free ports, and
a montage's segments as the decode stage sends them."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtest.media_factory import make_montage_video, photos
from schemas.segments import Frame, SegmentBatch
from workers.decode.dispatch import decode_segments
from workers.decode.policy import SegmentPolicy
from workers.localstack import StackEndpoints, start_stack, stop_stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackEndpoints]:
    data_dir = tmp_path_factory.mktemp("stack")
    endpoints = start_stack(data_dir)
    try:
        yield endpoints
    finally:
        stop_stack(data_dir)


@pytest.fixture
def stack_env(stack: StackEndpoints, monkeypatch: pytest.MonkeyPatch) -> StackEndpoints:
    """Point settings models at the test stack, with a fresh key prefix per test."""
    for key, value in stack.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("CAPSTREAM_KEY_PREFIX", f"t{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("CAPSTREAM_SESSION_TIMEOUT_MS", "3000")
    return stack


@pytest.fixture
def unique() -> str:
    """A suffix for topic and group names so tests never share Kafka state."""
    return uuid.uuid4().hex[:8]


@pytest.fixture
def montage_segments(tmp_path: Path) -> list[SegmentBatch]:
    """Two photographs of 3 s each, decoded at 2 fps (at most 8 frames, 768 visual tokens a
    segment): the second scene starts at 3 s, so relative times would show."""
    video = tmp_path / "montage.mp4"
    make_montage_video(video, photos(2), seconds_each=3.0, size=(480, 272))
    policy = SegmentPolicy(sample_fps=2.0, max_frames=8, visual_token_budget=768)
    found = [
        SegmentBatch(
            object_id="montage",
            segment_id=f"montage-{s.index}",
            segment_index=s.index,
            source_uri=f"file://{video}",
            media_kind="video",
            start_s=s.start_s,
            end_s=s.end_s,
            reason=s.reason,
            frames=[Frame(index=f.index, pts_s=f.pts_s, width=f.width, height=f.height, jpeg=f.jpeg) for f in s.frames],
        )
        for s in decode_segments(str(video), policy)
    ]
    assert [round(s.start_s, 1) for s in found] == [0.0, 3.0]
    return found


def pytest_report_header() -> list[str]:
    return [f"capstream tests, cpus={os.cpu_count()}, cwd={Path.cwd()}"]
