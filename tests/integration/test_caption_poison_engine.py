"""Poison inputs against the REAL in-process engines (tiny Qwen3-VL, MiniLM on vLLM CPU):
they fail alone and are never taken for a broken engine, also before any request has
succeeded (the built-in canary is a request the real engine completes). A request whose
caller gave up (its timeout) is aborted in the real engine, so it stops holding a slot.

The caption poison bypasses the stage's frame check on purpose: it stands for whatever input
the check cannot foresee. Every poison is made here; nothing binary is committed.
"""

from __future__ import annotations

import asyncio
import base64
import io
import random

import pytest
from PIL import Image

from tests.poison_harness import fails_as_the_inputs_fault
from workers.caption.backend import VllmCaptionBackend
from workers.caption.prompt import ChatMessages
from workers.embed.backend import VllmEmbedBackend
from workers.offline_profile import offline_env
from workers.runtime.continuous import engine_thread
from workers.settings import CaptionSettings, EmbedSettings

pytestmark = pytest.mark.e2e

ATTEMPTS = 3  # what the consumer loop does with a transient failure before the DLQ


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in offline_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("CAPSTREAM_MAX_ATTEMPTS", str(ATTEMPTS))  # the engine-failure limit too


def _image_message(data: bytes) -> ChatMessages:
    url = "data:image/jpeg;base64," + base64.b64encode(data).decode()
    content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "Describe it."}]
    return [{"role": "user", "content": content}]


def _jpeg(seed: int) -> bytes:
    out = io.BytesIO()
    Image.frombytes("RGB", (64, 64), random.Random(seed).randbytes(64 * 64 * 3)).save(out, format="JPEG")
    return out.getvalue()


async def test_real_engines_blame_poison_on_the_input(offline: None) -> None:
    # Both engines live in this process at once, on one engine thread, as in `capstream run`:
    # vLLM's per-process state does not survive one engine being torn down under the other.
    executor = engine_thread()
    captioner = VllmCaptionBackend(CaptionSettings(), executor)
    embedder = VllmEmbedBackend(EmbedSettings(), executor)
    try:
        await captioner.start()
        await embedder.start()
        await _caption_poison_is_the_inputs_fault(captioner)
        await _overlong_text_is_the_inputs_fault(embedder)
        await _a_request_given_up_on_leaves_the_engine(captioner, _image_message(_jpeg(3)))
    finally:
        await captioner.close()
        await embedder.close()
        executor.shutdown(wait=True)


async def _caption_poison_is_the_inputs_fault(engine: VllmCaptionBackend) -> None:
    # Four poison segments first, each tried like the loop would: a fresh worker meeting them
    # at the head of its partitions, before anything succeeded (the canary answers for the engine).
    for seed in range(4):
        await fails_as_the_inputs_fault(engine.caption, _image_message(random.Random(seed).randbytes(3000)), ATTEMPTS)
    assert (await engine.caption(_image_message(_jpeg(1)))).completion_tokens
    # After a success, more poison (truncated JPEGs): the probe is now the last good request.
    for seed in range(4):
        await fails_as_the_inputs_fault(engine.caption, _image_message(_jpeg(10 + seed)[:200]), ATTEMPTS)
    assert (await engine.caption(_image_message(_jpeg(2)))).completion_tokens


async def _overlong_text_is_the_inputs_fault(engine: VllmEmbedBackend) -> None:
    for _ in range(4):
        await fails_as_the_inputs_fault(engine.embed, "caption " * 5000, ATTEMPTS)  # far beyond MiniLM's context
    assert len(await engine.embed("a cat on a sofa")) == 384


async def _a_request_given_up_on_leaves_the_engine(engine: VllmCaptionBackend, request: ChatMessages) -> None:
    """What a request timeout does (cancels the wait), on a caption that would run 1500 steps."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    usual = engine._sampling
    engine._sampling = SamplingParams(
        max_tokens=1500, min_tokens=1500, ignore_eos=True, output_kind=RequestOutputKind.FINAL_ONLY
    )
    try:
        waiting = asyncio.create_task(engine._submit(request))
        assert await _engine_holds_requests(engine, until=True), "the request never reached the engine"
    finally:
        engine._sampling = usual
    waiting.cancel()
    assert await _engine_holds_requests(engine, until=False), "the abandoned request still holds a slot"
    assert (await engine._submit(request)).completion_tokens


async def _engine_holds_requests(engine: VllmCaptionBackend, until: bool, hops: int = 50) -> bool:
    """Asks the engine thread (between steps) whether the engine holds requests, until it answers
    ``until``; whether it did within ``hops`` asks."""
    llm_engine = engine._llm.llm_engine
    for _ in range(hops):
        holds = await asyncio.get_running_loop().run_in_executor(engine._executor, llm_engine.has_unfinished_requests)
        if holds == until:
            return True
        await asyncio.sleep(0.05)
    return False
