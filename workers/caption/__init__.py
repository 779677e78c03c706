"""Caption stage: segment batches -> Qwen3-VL captions on vLLM."""
