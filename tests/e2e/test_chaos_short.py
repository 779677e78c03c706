"""A short chaos run in CI: workers killed with -9, Redis and the broker restarted mid-run;
nothing lost, nothing duplicated (the full run is `python loadtest/chaos.py`)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

SCRIPT = Path(__file__).resolve().parents[2] / "loadtest" / "chaos.py"


def test_short_chaos_run_loses_and_duplicates_nothing() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--objects", "10", "--seconds", "420"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    last = result.stdout.strip().splitlines()[-1]
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    figures = dict(re.findall(r"(\w+)=(\d+)", last))
    assert last.startswith("chaos: ")
    assert figures["lost"] == "0" and figures["duplicates"] == "0"
    assert int(figures["kills"]) >= 3 and figures["restarts"] == "2"
