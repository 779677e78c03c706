"""The decode worker's memory limits rest on a measurement: the worst input the decode budgets
accept (an 8192x8192 video at the highest frame rate the pixel-rate budget allows, decoded with
the 16 codec threads FFmpeg picks on a large node) peaks within ``WORST_PEAK_BYTES``, the
figure the compose and Kubernetes checks size the limits from (``loadtest/decode_memory.py``
measured it; its docstring has every case).

If decoding starts to hold more (a buffered frame more, a larger default picture), this fails
before the limits kill workers in production. Measured in a child process (its own VmHWM).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtest import decode_memory as dm
from tests import compose_checks as cc

# Allocator and thread-timing noise between runs of the same decode (seen: a few percent).
TOLERANCE = 1.10


@pytest.mark.impure  # a child process, for its own peak RSS
def test_worst_accepted_input_stays_within_the_figure_the_limits_use(tmp_path: Path) -> None:
    video = dm.measure("video-8k", dm.build("video-8k", tmp_path), dm.FFMPEG_MAX_AUTO_THREADS)
    print(f"\n{dm.report([video])}")
    assert video.reason is None and video.segments >= 1, video  # the budgets accept it: it is allowed
    assert video.peak_rss <= dm.WORST_PEAK_BYTES * TOLERANCE, video
    # The figure is a measurement, not a round guess far above it.
    assert video.peak_rss >= dm.WORST_PEAK_BYTES / 2, video


def test_the_deployment_checks_size_decode_limits_from_the_measured_figure() -> None:
    assert cc.DECODE_WORST_PEAK_BYTES == dm.WORST_PEAK_BYTES
