"""``capstream parse-event``: normalised JSON on success, one line and exit 2 on error."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.impure  # every test runs the CLI in a child process, as a user does


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


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"uri": "s3://media/\\ud800.mp4"}', "malformed_record"),  # lone surrogate
        (b"[" * 100_000 + b"]" * 100_000, "malformed_json"),  # deeper than json can recurse
        (b'{"uri": "s3://b/k", "size": 1' + b"0" * 5000 + b"}", "malformed_json"),  # > int digit limit
        (b"\xff\xfe not utf-8", "malformed_json"),
    ],
)
def test_hostile_events_get_one_line_and_exit_2_never_a_traceback(payload: bytes, reason: str) -> None:
    result = _run(payload)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and reason in lines[0], lines[:5]
