"""The shared parts of model stages, without an engine: each stage's prefixed settings feed
one ``ModelServing`` view, the request timeout bounds both backends, and ``ModelStage``
skips finished segments, emits one output per segment and marks it when delivered."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest
import structlog

from schemas.captions import Caption
from schemas.embeddings import Embedding
from workers.caption.backend import OpenAICaptionBackend, VllmCaptionBackend
from workers.embed.backend import OpenAIEmbedBackend, VllmEmbedBackend
from workers.runtime.model_backend import VllmBackend
from workers.runtime.stage import ModelStage, Output, RecordContext
from workers.settings import CaptionSettings, EmbedSettings, ModelServing, ModelStageSettings

KNOB_FIELD = {"served_name": "model_name", "max_attempts": None, "stage": None}  # else the knob's own name


@pytest.mark.parametrize("settings_cls", [CaptionSettings, EmbedSettings])
def test_every_knob_is_a_prefixed_setting_of_every_model_stage(settings_cls: type[ModelStageSettings]) -> None:
    for knob in dataclasses.fields(ModelServing):
        name = KNOB_FIELD.get(knob.name, knob.name)
        if name is not None:
            assert f"{settings_cls.serving_prefix}_{name}" in settings_cls.model_fields, (settings_cls, name)


def test_the_view_reads_the_documented_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAPSTREAM_CAPTION_MODEL", "/models/vl")
    monkeypatch.setenv("CAPSTREAM_CAPTION_REQUEST_TIMEOUT_S", "7")
    monkeypatch.setenv("CAPSTREAM_EMBED_MODEL_NAME", "served-embedder")
    monkeypatch.setenv("CAPSTREAM_EMBED_BACKEND", "openai")
    monkeypatch.setenv("CAPSTREAM_MAX_ATTEMPTS", "5")
    caption, embed = CaptionSettings().serving, EmbedSettings().serving
    assert (caption.stage, caption.model, caption.served_name) == ("caption", "/models/vl", "/models/vl")
    assert caption.request_timeout_s == 7.0 and caption.max_attempts == 5
    assert (embed.stage, embed.served_name, embed.backend) == ("embed", "served-embedder", "openai")
    assert embed.max_in_flight == EmbedSettings().embed_max_in_flight
    assert "EMPTY" not in repr(caption)  # the API key stays out of logs


class SlowEngine(VllmBackend[str, str]):
    """The in-process base stepping a fake engine (no vLLM): each step takes ``delay_s``, a
    request finishes after as many steps as it has characters."""

    delay_s = 0.0

    def __init__(self, serving: ModelServing, canary: str) -> None:
        super().__init__(serving, canary)
        self.running: dict[str, list[Any]] = {}
        self.aborted: list[str] = []

    def engine_defaults(self) -> dict[str, Any]:
        return {}

    def _render(self, request: str) -> tuple[Any, Any]:
        raise AssertionError("the fake engine takes requests as they are")

    def _result(self, output: Any, latency_s: float) -> str:
        raise AssertionError("the fake engine returns results as they are")

    def add(self, request_id: str, request: str) -> None:
        self.running[request_id] = [request, len(request)]

    def step(self) -> list[tuple[str, str | Exception]]:
        time.sleep(self.delay_s)
        finished: list[tuple[str, str | Exception]] = []
        for rid, state in list(self.running.items()):
            state[1] -= 1
            if state[1] <= 0:
                del self.running[rid]
                finished.append((rid, state[0].upper()))
        return finished

    def abort(self, request_ids: Sequence[str]) -> None:
        for rid in request_ids:
            self.running.pop(rid, None)
        self.aborted.extend(request_ids)


async def test_the_request_timeout_bounds_the_in_process_engine_and_aborts_the_request() -> None:
    serving = dataclasses.replace(CaptionSettings().serving, request_timeout_s=0.05)
    engine = SlowEngine(serving, canary="ok")
    try:
        assert await engine._submit("fast") == "FAST"
        engine.delay_s = 0.01
        with pytest.raises(TimeoutError):
            await engine._submit("slow" * 100)  # 400 steps: 4 s
        await asyncio.sleep(0.3)  # the abort comes at the next step (10 ms)
        assert not engine.running and engine.aborted == ["1"]  # it stopped holding a slot
    finally:
        await engine.close()


async def test_the_request_timeout_bounds_the_http_clients() -> None:
    caption = OpenAICaptionBackend(CaptionSettings(caption_openai_url="http://h:1/v1", caption_request_timeout_s=9))
    embed = OpenAIEmbedBackend(EmbedSettings(embed_openai_url="http://h:2/v1/", embed_openai_api_key="k"))
    for backend, url, timeout, key in (
        (caption, "http://h:1/v1/", 9.0, "EMPTY"),
        (embed, "http://h:2/v1/", 120.0, "k"),
    ):
        await backend.start()
        try:
            client = backend._client
            assert client is not None and str(client.base_url) == url
            assert client.timeout.read == client.timeout.connect == timeout
            assert client.headers["Authorization"] == f"Bearer {key}"
        finally:
            await backend.close()


def test_both_stages_name_their_model_and_backend() -> None:
    settings = CaptionSettings(caption_model="/m/vl", caption_model_name="vl")
    for backend in (VllmCaptionBackend(settings), OpenAICaptionBackend(settings)):
        assert backend.model == "vl"
    embed = EmbedSettings(embed_model="/m/e")
    assert [VllmEmbedBackend(embed).name, OpenAIEmbedBackend(embed).name] == ["vllm", "openai"]
    assert VllmEmbedBackend(embed).model == "/m/e"


class Progress:
    def __init__(self, marked: set[str]) -> None:
        self.marked = marked
        self.calls: list[tuple[str, ...]] = []

    async def is_marked(self, stage: str, segment_id: str) -> bool:
        return segment_id in self.marked

    async def mark(self, stage: str, object_id: str, segment_id: str) -> bool:
        self.calls.append(("mark", stage, object_id, segment_id))
        return True

    async def fail(self, object_id: str, error: str) -> bool:
        self.calls.append(("fail", object_id, error))
        return True


class Echo:
    name = "vllm"
    model = "echo"

    async def start(self) -> None: ...
    async def close(self) -> None: ...


class LengthStage(ModelStage[Caption, Echo]):
    """A whole model stage: caption -> a one-value 'embedding' of its length."""

    name = "length"
    input_model = Caption
    done_marker = "embedded"

    async def run_model(self, item: Caption, ctx: RecordContext, log: Any) -> Embedding:
        vector = [float(len(item.text))]
        return Embedding(
            **item.segment_ref(),
            embedding_id="e",
            caption=item.text,
            caption_model=item.model,
            model="len",
            dim=1,
            vector=vector,
        )


def _caption(segment_id: str) -> Caption:
    return Caption(
        object_id="obj",
        segment_id=segment_id,
        segment_index=0,
        source_uri="u",
        start_s=0.0,
        end_s=1.0,
        frame_pts=[],
        text="four",
        model="m",
        backend="vllm",
        latency_s=0.0,
    )


async def test_a_model_stage_is_a_page_of_code() -> None:
    progress = Progress(marked={"done-already"})
    stage = LengthStage("in", "out", progress, Echo())
    ctx = RecordContext(topic="in", partition=0, offset=0, key="obj", value=b"", attempt=1, log=structlog.get_logger())
    assert stage.output_topics == ("out",)
    assert [o async for o in stage.process(_caption("done-already"), ctx)] == []
    [out] = [o async for o in stage.process(_caption("new"), ctx)]
    assert isinstance(out, Output) and (out.topic, out.key) == ("out", "obj")
    assert isinstance(out.value, Embedding) and out.value.vector == [4.0] and out.value.segment_id == "new"
    await stage.delivered(_caption("new"), ctx)
    assert progress.calls == [("mark", "embedded", "obj", "new")]
    assert stage.parse(_caption("x").to_bytes()).segment_id == "x"


async def test_the_engine_thread_is_named_after_the_stage() -> None:
    engine = SlowEngine(EmbedSettings().serving, canary="ok")
    try:
        name = await asyncio.get_running_loop().run_in_executor(
            engine._executor, lambda: threading.current_thread().name
        )
        assert name.startswith("embed-engine")
    finally:
        await engine.close()
