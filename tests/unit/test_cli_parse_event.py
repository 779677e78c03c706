"""``capstream parse-event``: normalised JSON on success, one line and exit 2 on error."""

from __future__ import annotations

import json
import subprocess
import sys


def _run(stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "workers.cli.main", "parse-event", "-"], input=stdin, capture_output=True, timeout=60
    )


def test_parse_event_prints_normalised_objects() -> None:
    event = {
        "Records": [
            {
                "eventName": "ObjectCreated:Put",
                "s3": {"bucket": {"name": "media"}, "object": {"key": "a+b.mp4", "size": 3, "eTag": "e"}},
            }
        ]
    }
    result = _run(json.dumps(event).encode())
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    [obj] = out["objects"]
    assert obj["key"] == "a b.mp4" and obj["uri"] == "s3://media/a b.mp4" and len(obj["object_id"]) == 36


def test_parse_event_rejects_garbage_with_one_line_and_exit_2() -> None:
    result = _run(b"{nope")
    assert result.returncode == 2
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "malformed_json" in lines[0]
    assert result.stdout == b""
