"""Where ``capstream up`` keeps the local stack, and how other commands find it."""

from __future__ import annotations

import os
from pathlib import Path

from workers.localstack import recorded_stack

# Explicit endpoints for both services mean the user chose them: the local stack is not asked.
_EXPLICIT = ("CAPSTREAM_KAFKA_BOOTSTRAP", "CAPSTREAM_REDIS_URL")


class StackNotRunning(Exception):
    """The recorded local stack is partly down: falling back to default ports could read an
    unrelated server (127.0.0.1:6379 is often someone else's Redis)."""


def stack_home() -> Path:
    return Path(os.environ.get("CAPSTREAM_HOME", "~/.capstream")).expanduser()


def use_running_stack() -> bool:
    """Point unset CAPSTREAM_* / AWS_* variables at the stack ``capstream up`` started.
    Explicit environment variables always win.

    Raises StackNotRunning when a stack is recorded but some of its services stopped, unless
    both endpoints are set explicitly.
    """
    home = stack_home()
    endpoints, stopped = recorded_stack(home)
    if endpoints is None:
        return False
    if stopped:
        if all(os.environ.get(name) for name in _EXPLICIT):
            return False
        raise StackNotRunning(
            f"the local stack in {home} is not fully running ({', '.join(sorted(stopped))} stopped); "
            "`capstream up` restarts it on the same ports, `capstream down` forgets it"
        )
    for key, value in endpoints.env().items():
        os.environ.setdefault(key, value)
    return True
