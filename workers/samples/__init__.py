"""Sample media shipped for ``capstream demo`` (made by ``python -m tests.make_samples``)."""

from __future__ import annotations

from pathlib import Path

SAMPLES_DIR = Path(__file__).parent


def sample_paths() -> list[Path]:
    return sorted(p for p in SAMPLES_DIR.iterdir() if p.suffix.lower() in {".mp4", ".jpg", ".png", ".gif", ".webm"})
