"""``capstream up`` / ``submit`` / ``status`` / ``down`` against a real background stack."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.media_factory import make_image

pytestmark = pytest.mark.integration


def _capstream(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.cli.main", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_up_submit_status_down(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAPSTREAM_", "AWS_"))}
    env["CAPSTREAM_HOME"] = str(tmp_path / "home")
    up = _capstream("up", env=env)
    try:
        assert up.returncode == 0, up.stderr
        endpoints = json.loads(up.stdout)
        assert endpoints["CAPSTREAM_KAFKA_BOOTSTRAP"].startswith("127.0.0.1:")
        again = _capstream("up", env=env)  # idempotent: reports the running stack
        assert json.loads(again.stdout) == endpoints

        image = tmp_path / "still.png"
        make_image(image, "PNG")
        submitted = _capstream("submit", str(image), env=env)
        assert submitted.returncode == 0, submitted.stderr
        object_id, uri = submitted.stdout.split()
        assert uri == "s3://media/still.png"
        # No workers run, so the object is accepted (in Kafka) but has no progress yet.
        status = _capstream("status", object_id, "--json", env=env)
        assert status.returncode == 1 and object_id in status.stderr
        assert json.loads(_capstream("status", "--json", env=env).stdout) == []
    finally:
        down = _capstream("down", env=env)
    assert down.returncode == 0 and "stopped" in down.stdout
    assert "nothing was running" in _capstream("down", env=env).stdout
