"""Both backends of each model stage give the same outputs for the same input: the
in-process vLLM engine and a client of a real ``vllm serve`` (CPU build, offline models)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from schemas.segments import SegmentBatch
from workers.caption.backend import OpenAICaptionBackend, VllmCaptionBackend
from workers.caption.prompt import build_caption_messages
from workers.embed.backend import OpenAIEmbedBackend, VllmEmbedBackend
from workers.localstack import ManagedProcess, free_port, stop_process
from workers.localstack.vllm_server import start_vllm_server, wait_for_vllm
from workers.offline_profile import offline_env
from workers.settings import CaptionSettings, EmbedSettings

pytestmark = pytest.mark.e2e


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = offline_env()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def _serve(tmp_path: Path, env: dict[str, str], model: str, name: str, args: list[str]) -> tuple[ManagedProcess, str]:
    port = free_port()
    proc = start_vllm_server(
        model, port, tmp_path / f"vllm-{port}.log", served_model_name=name, extra_args=args, env=env
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_vllm(url, process=proc)
    except Exception:
        stop_process(proc)
        raise
    return proc, url + "/v1"


async def test_caption_backends_agree(
    tmp_path: Path, offline: dict[str, str], montage_segments: list[SegmentBatch]
) -> None:
    settings = CaptionSettings()
    messages = [build_caption_messages(s, settings.caption_prompt) for s in montage_segments]
    engine = VllmCaptionBackend(settings)
    await engine.start()
    try:
        local = [await engine.caption(m) for m in messages]
    finally:
        await engine.close()

    proc, url = _serve(
        tmp_path,
        offline,
        settings.caption_model,
        offline["CAPSTREAM_CAPTION_MODEL_NAME"],
        ["--max-model-len", "2048", "--limit-mm-per-prompt", '{"image": 8, "video": 0}', "--enforce-eager"],
    )
    try:
        client = OpenAICaptionBackend(CaptionSettings(caption_backend="openai", caption_openai_url=url))
        await client.start()
        remote = [await client.caption(m) for m in messages]
        await client.close()
    finally:
        stop_process(proc)
    assert [r.text for r in remote] == [r.text for r in local]
    assert [r.prompt_tokens for r in remote] == [r.prompt_tokens for r in local]
    assert all(r.completion_tokens and r.completion_tokens <= settings.caption_max_tokens for r in remote)


async def test_embed_backends_agree(tmp_path: Path, offline: dict[str, str]) -> None:
    settings = EmbedSettings()
    texts = ["a cat sleeping on a sofa", "a rocket launching", ""]
    engine = VllmEmbedBackend(settings)
    await engine.start()
    try:
        local = [await engine.embed(t) for t in texts]
    finally:
        await engine.close()
    proc, url = _serve(
        tmp_path,
        offline,
        settings.embed_model,
        offline["CAPSTREAM_EMBED_MODEL_NAME"],
        ["--runner", "pooling", "--enforce-eager"],
    )
    try:
        client = OpenAIEmbedBackend(EmbedSettings(embed_backend="openai", embed_openai_url=url))
        await client.start()
        remote = [await client.embed(t) for t in texts]
        await client.close()
    finally:
        stop_process(proc)
    for a, b in zip(local, remote, strict=True):
        assert len(a) == len(b) == 384
        cos = sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))
        assert cos > 0.999
    cat, rocket = local[0], local[1]
    assert sum(x * y for x, y in zip(cat, rocket, strict=True)) < 0.5  # different meanings stay apart
    assert os.environ["HF_HUB_OFFLINE"] == "1"
