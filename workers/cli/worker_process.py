"""Worker processes started by other commands (``demo``), the tests and the benchmarks:
``capstream`` stages in a child process with their own log file, stopped the way a supervisor
would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path


def spawn_worker(
    args: Sequence[str], env: Mapping[str, str], log_path: Path, core: int | None = None
) -> subprocess.Popen[bytes]:
    """``python -m workers.cli.main ARGS`` in its own process group, logging to ``log_path``;
    under ``taskset -c CORE`` when pinned, so every thread it ever starts stays on that core."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    pin = ["taskset", "-c", str(core)] if core is not None else []
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [*pin, sys.executable, "-m", "workers.cli.main", *args],
            env=dict(env), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def stop_worker(proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    """SIGTERM (the worker drains and commits), then SIGKILL its group if it hangs."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
