"""Sample media shipped for ``capstream demo`` (made by ``python -m tests.make_samples``)."""

from __future__ import annotations

from pathlib import Path

SAMPLES_DIR = Path(__file__).parent
# spoken.mp4 says this (espeak-ng, tests/make_samples.py); `capstream demo` searches for the word.
# Words the offline recognizer (pocketsphinx) hears right in espeak-ng's voice.
SPOKEN_SAMPLE = "spoken.mp4"
SPOKEN_SENTENCE = "The company will open a new restaurant in Washington"
SPOKEN_WORD = "restaurant"


def sample_paths() -> list[Path]:
    return sorted(p for p in SAMPLES_DIR.iterdir() if p.suffix.lower() in {".mp4", ".jpg", ".png", ".gif", ".webm"})
