"""Both caption input modes (``CAPSTREAM_CAPTION_INPUT=video|images``) on both backends: the
in-process vLLM engine and a client of a real ``vllm serve`` started the project's way.

Checked on what the model saw, not on "it ran": the prompt token ids each backend returns are
decoded, and video mode's ``<t seconds>`` markers (written by Qwen3-VL's processor from the
frame times we pass) must be the segment's absolute media times, identically on both paths.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from schemas.segments import SegmentBatch
from workers.caption.backend import (
    CaptionResult,
    OpenAICaptionBackend,
    VllmCaptionBackend,
    vllm_serve_caption_args,
)
from workers.caption.prompt import CaptionInput, build_caption_messages
from workers.localstack import free_port, stop_process
from workers.localstack.vllm_server import start_vllm_server, wait_for_vllm
from workers.offline_profile import offline_env
from workers.settings import CaptionSettings

pytestmark = pytest.mark.e2e

MODES: tuple[CaptionInput, ...] = ("video", "images")
TIMESTAMP = re.compile(r"<(\d+\.\d) seconds>")


def expected_times(segment: SegmentBatch) -> list[str]:
    """Qwen3-VL's marker of each temporal patch: the mean time of its two frames (the last
    frame repeated when the count is odd), from the real presentation times."""
    pts = [round(f.pts_s * 1000) / 1000 for f in segment.frames]  # the metadata's 1 kHz clock
    if len(pts) % 2:
        pts.append(pts[-1])
    return [f"{(a + b) / 2:.1f}" for a, b in zip(pts[::2], pts[1::2], strict=True)]


async def _caption_all(backend: VllmCaptionBackend | OpenAICaptionBackend, requests: list) -> list[CaptionResult]:
    await backend.start()
    try:
        return [await backend.caption(m) for m in requests]
    finally:
        await backend.close()


async def test_both_modes_on_both_backends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, montage_segments: list[SegmentBatch]
) -> None:
    offline = offline_env()  # the tiny model, offline, in-process engine settings
    for key, value in offline.items():
        monkeypatch.setenv(key, value)
    settings = CaptionSettings()
    cases = [(mode, s) for mode in MODES for s in montage_segments]
    requests = [build_caption_messages(s, settings.caption_prompt, mode) for mode, s in cases]
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
            CaptionSettings(caption_backend="openai", caption_openai_url=f"http://127.0.0.1:{port}/v1")
        )
        remote = await _caption_all(client, requests)
    finally:
        stop_process(proc)

    tokenizer = AutoTokenizer.from_pretrained(settings.caption_model)
    for (mode, segment), here, there in zip(cases, local, remote, strict=True):
        assert here.text and here.text == there.text, (mode, segment.start_s)
        assert here.prompt_token_ids == there.prompt_token_ids
        assert here.visual_tokens == there.visual_tokens and here.visual_tokens
        prompt = tokenizer.decode(list(here.prompt_token_ids or ()))
        if mode == "video":
            assert TIMESTAMP.findall(prompt) == expected_times(segment), prompt
            assert prompt.count("<|video_pad|>") == here.visual_tokens
        else:
            assert TIMESTAMP.findall(prompt) == [f"{f.pts_s:.1f}" for f in segment.frames]
            assert prompt.count("<|image_pad|>") == here.visual_tokens

    # The same frames cost half the visual tokens as a video (two frames per temporal patch).
    by_mode = {
        mode: [r.visual_tokens or 0 for (m, _), r in zip(cases, local, strict=True) if m == mode] for mode in MODES
    }
    for video, images, segment in zip(by_mode["video"], by_mode["images"], montage_segments, strict=True):
        frames = len(segment.frames)
        assert video * frames == images * ((frames + 1) // 2), (video, images, frames)
