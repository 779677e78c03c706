"""``capstream segments FILE [--json]``: as a user runs it (a subprocess reading settings from env),
and in-process for the human table and the errors (each subprocess costs ~1 s of imports)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from loadtest import media_factory as mf
from workers.cli.segments import cmd_segments

FPS = 24


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.cli.main", "segments", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "CAPSTREAM_LOG_LEVEL": "WARNING", **env},
    )


@pytest.fixture(scope="module")
def montage(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[float]]:
    path = tmp_path_factory.mktemp("cli") / "montage.mp4"
    return path, mf.make_montage_video(path, mf.photos(3), 2.0, fps=FPS)


@pytest.mark.impure  # the CLI in a child process, as a user runs it
def test_json_lists_segments_and_frame_times(montage: tuple[Path, list[float]]) -> None:
    path, cuts = montage
    done = run(str(path), "--json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [sorted(r) for r in rows] == [["end_s", "frame_pts", "index", "reason", "start_s"]] * 3
    assert [r["reason"] for r in rows] == ["cut", "cut", "end"]
    assert [r["end_s"] for r in rows[:-1]] == pytest.approx(cuts, abs=1 / FPS + 1e-6)
    # Qwen3-VL's 2 fps (CAPSTREAM_SAMPLE_FPS) across each 2 s scene.
    assert [r["frame_pts"] for r in rows] == [[0.0, 0.5, 1.0, 1.5], [2.0, 2.5, 3.0, 3.5], [4.0, 4.5, 5.0, 5.5]]


@pytest.mark.impure  # the CLI in a child process, as a user runs it
def test_settings_come_from_env(montage: tuple[Path, list[float]]) -> None:
    path, _ = montage
    done = run(
        str(path), "--json", CAPSTREAM_SEGMENT_POLICY="fixed", CAPSTREAM_MAX_SEGMENT_S="4", CAPSTREAM_SAMPLE_FPS="0.5"
    )
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [(r["start_s"], r["end_s"], r["reason"], r["frame_pts"]) for r in rows] == [
        (0.0, 4.0, "window", [0.0, 2.0]),
        (4.0, 6.0, "end", [4.0]),
    ]


def test_table_for_people(montage: tuple[Path, list[float]], capsys: pytest.CaptureFixture[str]) -> None:
    path, _ = montage
    with capture_logs():  # keeps the decoder's debug line out of stdout
        assert cmd_segments(path, as_json=False) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "3 segment(s)" in lines[0] and "policy=scene" in lines[0]
    assert lines[2].split() == ["0", "0.000", "2.000", "cut", "0.000", "0.500", "1.000", "1.500"]


def test_unreadable_input_exits_2_with_the_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    audio = tmp_path / "tone.m4a"
    mf.make_audio_only(audio)
    with capture_logs():
        assert cmd_segments(audio, as_json=True) == 2
        out, err = capsys.readouterr()
        assert out == "" and "no_video_stream" in err and "audio:aac" in err
        assert cmd_segments(tmp_path / "missing.mp4", as_json=False) == 2
    assert "No such file" in capsys.readouterr().err
