"""Caption backends: the in-process vLLM engine and a client of ``vllm serve``.

Both take the same chat messages and return the same ``CaptionResult``; which one runs is
``CAPSTREAM_CAPTION_BACKEND`` (``vllm`` owns a GPU per worker, ``openai`` lets many workers
share one server). Engine thread, continuous batching, HTTP client and timeouts are the shared bases'
(``workers.runtime.model_backend``); here is only what captioning adds.

A video segment's frame times travel as vLLM ``media_io_kwargs`` (``workers.caption.prompt``):
in the request body for the server (which must run with ``--trust-request-mm-kwargs``, see
``vllm_serve_caption_args``), and in the chat params of vLLM's own renderer in process, the
same renderer and video loader the server runs, so both backends give the model the same
frames and the same timestamps. Both count the visual tokens of the prompt they sent.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Protocol

from workers.caption.prompt import ChatMessages, MediaIOKwargs, build_canary_messages, split_video_metadata
from workers.caption.structured import STRUCTURED_OUTPUTS_CONFIG, openai_response_format, split_response_schema
from workers.runtime.continuous import OnStep
from workers.runtime.model_backend import OpenAIBackend, VllmBackend
from workers.runtime.stage import ModelBackend
from workers.settings import CaptionSettings


@dataclass(frozen=True)
class CaptionResult:
    text: str
    prompt_tokens: int | None
    completion_tokens: int | None
    latency_s: float
    visual_tokens: int | None = None  # image and video placeholder tokens of the prompt
    prompt_token_ids: tuple[int, ...] | None = None  # the prompt as the model saw it


VISUAL_PAD_TOKENS = ("<|image_pad|>", "<|video_pad|>")  # Qwen-VL: one per visual token


def vllm_serve_caption_args(settings: CaptionSettings) -> list[str]:
    """The ``vllm serve`` arguments the caption requests need: room for a segment's frames as
    images or as one video, and per-request ``media_io_kwargs`` (the video's frame times)."""
    limits = {"image": settings.caption_max_images, "video": 1}
    structured = ["--structured-outputs-config", json.dumps(STRUCTURED_OUTPUTS_CONFIG)]
    return ["--limit-mm-per-prompt", json.dumps(limits), "--trust-request-mm-kwargs", *structured]


class CaptionBackend(ModelBackend, Protocol):
    async def caption(self, messages: ChatMessages) -> CaptionResult: ...


class VllmCaptionBackend(VllmBackend[ChatMessages, CaptionResult]):
    def __init__(
        self, settings: CaptionSettings, executor: Executor | None = None, on_step: OnStep | None = None
    ) -> None:
        super().__init__(settings.serving, build_canary_messages(settings.caption_prompt), executor, on_step)
        self._settings = settings
        self._sampling: Any = None
        self._pad_ids: frozenset[int] = frozenset()

    def engine_defaults(self) -> dict[str, Any]:
        s = self._settings
        return {
            "max_model_len": s.caption_max_model_len,
            "limit_mm_per_prompt": {"image": s.caption_max_images, "video": 1},
            "mm_processor_cache_gb": 0,
            "structured_outputs_config": STRUCTURED_OUTPUTS_CONFIG,  # workers.caption.structured
        }

    def _load(self) -> None:
        super()._load()
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        self._sampling = SamplingParams(
            max_tokens=self._settings.caption_max_tokens,
            temperature=self._settings.caption_temperature,
            output_kind=RequestOutputKind.FINAL_ONLY,  # as LLM.chat asks: one output, when finished
        )
        tokenizer = self._llm.get_tokenizer()
        self._pad_ids = frozenset(tokenizer.convert_tokens_to_ids(t) for t in VISUAL_PAD_TOKENS)

    def _render(self, request: ChatMessages) -> tuple[Any, Any]:
        # LLM.chat's own rendering (chat template, media fetched from their data URLs and
        # processed; a bad frame raises here, for this request alone), plus the request's
        # media_io_kwargs, which LLM.chat only takes per engine.
        request, schema = split_response_schema(request)
        sampling = self._sampling if schema is None else self._structured_sampling(schema)
        messages, media_io_kwargs = split_video_metadata(request)
        if media_io_kwargs is None:
            return self._llm._preprocess_chat_one(messages), sampling
        return self._render_with_media_io(messages, media_io_kwargs), sampling

    def _structured_sampling(self, schema: dict[str, Any]) -> Any:
        from vllm.sampling_params import StructuredOutputsParams

        sampling = self._sampling.clone()
        sampling.max_tokens = self._settings.caption_structured_max_tokens
        sampling.structured_outputs = StructuredOutputsParams(json=schema)
        return sampling

    def _render_with_media_io(self, messages: ChatMessages, media_io_kwargs: MediaIOKwargs) -> Any:
        """``LLM._preprocess_chat_one`` (vLLM 0.32) with per-request ``media_io_kwargs``, as the
        server's chat endpoint renders them."""
        from vllm.renderers.params import ChatParams

        llm = self._llm
        renderer = llm.renderer
        chat_params = ChatParams(
            chat_template=llm.chat_template,
            chat_template_kwargs={
                "add_generation_prompt": True,
                "continue_final_message": False,
                "tools": None,
                "tokenize": False,
            },
            media_io_kwargs=media_io_kwargs,
        )
        tok_params = renderer.default_chat_tok_params.with_kwargs(add_special_tokens=False)
        _, (engine_input,) = renderer.render_chat([messages], chat_params, tok_params)
        return engine_input

    def _result(self, output: Any, latency_s: float) -> CaptionResult:
        completion = output.outputs[0]
        if completion.finish_reason in ("abort", "error"):
            raise RuntimeError(f"caption request ended with {completion.finish_reason!r}")
        prompt_ids = tuple(output.prompt_token_ids or ())
        return CaptionResult(
            text=completion.text.strip(),
            prompt_tokens=len(prompt_ids),
            completion_tokens=len(completion.token_ids),
            latency_s=latency_s,
            visual_tokens=sum(1 for t in prompt_ids if t in self._pad_ids),
            prompt_token_ids=prompt_ids,
        )

    async def caption(self, messages: ChatMessages) -> CaptionResult:
        return await self._submit(messages)


class OpenAICaptionBackend(OpenAIBackend):
    def __init__(self, settings: CaptionSettings) -> None:
        super().__init__(settings.serving)
        self._settings = settings
        self._pad_ids: frozenset[int] | None = None

    async def _visual_pad_ids(self) -> frozenset[int]:
        """The server's ids of the visual placeholder tokens, to count them in each prompt.

        Asked on the first caption, not at start: a worker that starts before its server is
        up waits like any request does (an outage), instead of failing to start."""
        if self._pad_ids is None:
            answer = await self._post_root(
                "tokenize", {"model": self.model, "prompt": "".join(VISUAL_PAD_TOKENS), "add_special_tokens": False}
            )
            self._pad_ids = frozenset(answer.get("tokens") or ())
        return self._pad_ids

    async def _post_root(self, path: str, body: dict[str, Any]) -> Any:
        """POST to the server's own endpoints (``/tokenize``), beside the ``/v1`` base URL."""
        assert self._client is not None
        resp = await self._client.post(str(self._client.base_url.join("/" + path)), json=body)
        resp.raise_for_status()
        return resp.json()

    async def caption(self, messages: ChatMessages) -> CaptionResult:
        s = self._settings
        pad_ids = await self._visual_pad_ids()
        started = time.perf_counter()
        messages, schema = split_response_schema(messages)
        messages, media_io_kwargs = split_video_metadata(messages)
        request: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": s.caption_max_tokens if schema is None else s.caption_structured_max_tokens,
            "temperature": s.caption_temperature,
            "return_token_ids": True,
        }
        if schema is not None:
            request["response_format"] = openai_response_format(schema)
        if media_io_kwargs is not None:
            request["media_io_kwargs"] = media_io_kwargs
        body = await self._post("chat/completions", request)
        usage = body.get("usage") or {}
        prompt_ids = tuple(body.get("prompt_token_ids") or ())
        return CaptionResult(
            text=(body["choices"][0]["message"]["content"] or "").strip(),
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            latency_s=time.perf_counter() - started,
            visual_tokens=sum(1 for t in prompt_ids if t in pad_ids) if prompt_ids else None,
            prompt_token_ids=prompt_ids or None,
        )


def make_caption_backend(
    settings: CaptionSettings,
    engine_executor: Executor | None = None,
    on_step: OnStep | None = None,
) -> CaptionBackend:
    """``on_step`` hears the requests of each in-process engine step (unused by the HTTP client)."""
    if settings.caption_backend == "openai":
        return OpenAICaptionBackend(settings)
    return VllmCaptionBackend(settings, engine_executor, on_step)
