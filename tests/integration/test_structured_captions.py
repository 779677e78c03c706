"""Structured captions (``CAPSTREAM_CAPTION_FORMAT=structured``) from the real tiny Qwen3-VL on
vLLM CPU, with both backends: the in-process engine and a client of ``vllm serve`` started the
project's way (``vllm_serve_caption_args``).

The tiny model's weights are random: without guided decoding it writes no JSON at all, and it
fills every string to its bound, so a reply that parses and keeps its times inside the segment
is the grammar's doing. The reply is checked raw (``json.loads``, strict validation, times
before any clamping), and both backends must write the same reply for the same segment.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from schemas.captions import CaptionStructure
from schemas.segments import SegmentBatch
from workers.caption.backend import CaptionResult, OpenAICaptionBackend, VllmCaptionBackend, vllm_serve_caption_args
from workers.caption.prompt import build_caption_messages
from workers.caption.structured import parse_structure, render_text, with_response_schema
from workers.localstack import free_port, stop_process
from workers.localstack.vllm_server import start_vllm_server, wait_for_vllm
from workers.offline_profile import offline_env
from workers.settings import CaptionSettings

pytestmark = pytest.mark.e2e

# Small, so the random model's reply (which fills every bound) takes seconds, not minutes.
BUDGET = 192


@pytest.fixture
def segments(montage_segments: list[SegmentBatch]) -> list[SegmentBatch]:
    """The montage's two scenes (the second starts at 3 s, so relative times would show) and a still."""
    first = montage_segments[0]
    still = {"segment_id": "still", "media_kind": "image", "start_s": 0.0, "end_s": 0.0, "frames": first.frames[:1]}
    return [*montage_segments, first.model_copy(update=still)]


async def _caption_all(backend: VllmCaptionBackend | OpenAICaptionBackend, requests: list) -> list[CaptionResult]:
    await backend.start()
    try:
        return [await backend.caption(m) for m in requests]
    finally:
        await backend.close()


def check_reply(reply: str, segment: SegmentBatch) -> CaptionStructure:
    """The reply is the schema's JSON as written, with every time inside the segment."""
    structure = CaptionStructure.model_validate(json.loads(reply), strict=True)
    for event in structure.events:  # start <= end: CaptionEvent's own check
        for t in (event.start_s, event.end_s):
            assert segment.start_s <= t <= segment.end_s, (t, segment.start_s, segment.end_s)
            assert math.isclose(t * 10, round(t * 10), abs_tol=1e-6), t  # tenths of a second
    if segment.end_s == segment.start_s:
        assert structure.events == []
    return structure


async def test_every_structured_caption_parses_on_both_backends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, segments: list[SegmentBatch]
) -> None:
    offline = offline_env()  # the tiny model, offline, in-process engine settings
    for key, value in offline.items():
        monkeypatch.setenv(key, value)
    settings = CaptionSettings(caption_format="structured", caption_structured_max_tokens=BUDGET)
    requests = [
        with_response_schema(build_caption_messages(s, settings.caption_prompt), s.start_s, s.end_s, BUDGET)
        for s in segments
    ]
    local = await _caption_all(VllmCaptionBackend(settings), requests)

    port = free_port()
    proc = start_vllm_server(
        settings.caption_model,
        port,
        tmp_path / "vllm.log",
        served_model_name=offline["CAPSTREAM_CAPTION_MODEL_NAME"],
        extra_args=["--max-model-len", "2048", "--enforce-eager", *vllm_serve_caption_args(settings)],
        env=offline,
    )
    try:
        wait_for_vllm(f"http://127.0.0.1:{port}", process=proc)
        client = OpenAICaptionBackend(
            settings.model_copy(
                update={"caption_backend": "openai", "caption_openai_url": f"http://127.0.0.1:{port}/v1"}
            )
        )
        remote = await _caption_all(client, requests)
    finally:
        stop_process(proc)

    events = 0
    for segment, here, there in zip(segments, local, remote, strict=True):
        for result in (here, there):
            structure = check_reply(result.text, segment)
            assert (result.completion_tokens or 0) < BUDGET  # closed by the grammar, not cut off
            assert parse_structure(result.text, segment.start_s, segment.end_s) is not None
            assert render_text(structure).startswith(structure.summary.strip())
            events += len(structure.events)
        assert here.text == there.text, segment.segment_id
    assert events, "no reply had an event: the time bounds went untested"
