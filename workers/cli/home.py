"""Where ``capstream up`` keeps the local stack, and how other commands find it."""

from __future__ import annotations

import os
from pathlib import Path

from workers.localstack import read_stack


def stack_home() -> Path:
    return Path(os.environ.get("CAPSTREAM_HOME", "~/.capstream")).expanduser()


def use_running_stack() -> bool:
    """Point unset CAPSTREAM_* / AWS_* variables at the stack ``capstream up`` started.
    Explicit environment variables always win."""
    endpoints = read_stack(stack_home())
    if endpoints is None:
        return False
    for key, value in endpoints.env().items():
        os.environ.setdefault(key, value)
    return True
