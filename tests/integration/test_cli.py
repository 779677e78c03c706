"""``capstream up`` / ``submit`` / ``status`` / ``down`` against a real background stack."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loadtest.media_factory import make_image

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
        stack_file = Path(env["CAPSTREAM_HOME"]) / "stack.json"
        secret = json.loads(stack_file.read_text())["s3_secret_key"]
        assert secret not in up.stdout + up.stderr, "`capstream up` printed the S3 secret"
        assert stat.S_IMODE(stack_file.stat().st_mode) == 0o600, "stack.json holds the secret: owner-only"
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

        # Redis of the stack dies: commands refuse instead of reading another Redis (the
        # machine's own 127.0.0.1:6379, for one), and `up` brings it back on its port.
        recorded = json.loads(stack_file.read_text())
        os.kill(recorded["pids"]["redis"], signal.SIGKILL)
        _wait_gone(recorded["pids"]["redis"])
        refused = _capstream("status", "--json", env=env)
        assert refused.returncode == 1 and refused.stdout == "", refused
        assert "redis stopped" in refused.stderr and "capstream up" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
        revived = _capstream("up", env=env)
        assert revived.returncode == 0, revived.stderr
        assert json.loads(revived.stdout) == endpoints, "revived on the same ports"
        assert json.loads(stack_file.read_text())["pids"]["redis"] != recorded["pids"]["redis"]
        status = _capstream("status", "--json", env=env)
        assert status.returncode == 0 and json.loads(status.stdout) == [], status.stderr
    finally:
        down = _capstream("down", env=env)
    assert down.returncode == 0 and "stopped" in down.stdout
    assert "nothing was running" in _capstream("down", env=env).stdout


def _wait_gone(pid: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"pid {pid} still alive")
