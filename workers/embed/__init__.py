"""Embed stage: captions -> vectors (vLLM pooling runner) -> embeddings topic + result view."""
