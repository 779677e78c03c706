"""Extra keyword arguments for in-process ``vllm.LLM`` engines, from a JSON setting.

Defaults suit a GPU; the offline/CPU profile overrides them (e.g. ``{"max_model_len": 2048,
"enforce_eager": true}``) without code changes.
"""

from __future__ import annotations

import json
from typing import Any


def engine_kwargs(overrides_json: str, defaults: dict[str, Any]) -> dict[str, Any]:
    try:
        overrides = json.loads(overrides_json or "{}")
    except json.JSONDecodeError as exc:
        raise ValueError(f"engine args must be a JSON object: {exc}") from exc
    if not isinstance(overrides, dict):
        raise ValueError("engine args must be a JSON object")
    return {**defaults, **overrides}
