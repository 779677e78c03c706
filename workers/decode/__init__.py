"""Decode stage: media objects -> segments of JPEG frames (``dispatch.decode_segments`` is the pure, blocking core)."""
