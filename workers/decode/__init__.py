"""Decode stage: media objects -> segments of JPEG frames (``segmenter`` is the pure, blocking core)."""
