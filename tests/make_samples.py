"""Regenerate the demo's sample media in workers/samples/: ``python -m tests.make_samples``.

Real photographs (loadtest/data/photos), encoded with PyAV, and a spoken sentence (espeak-ng);
small enough to keep in git.
"""

from __future__ import annotations

from pathlib import Path

from loadtest.media_factory import make_image, make_montage_video, make_short_clip, photos
from tests.speech_media import spoken_video
from workers.samples import SPOKEN_SAMPLE, SPOKEN_SENTENCE

SAMPLES = Path(__file__).resolve().parent.parent / "workers" / "samples"


def main() -> None:
    make_montage_video(SAMPLES / "four-scenes.mp4", photos(4), seconds_each=2.5, size=(320, 240))
    make_short_clip(SAMPLES / "pan-clip.mp4", seconds=3.0, size=(320, 240))
    make_image(SAMPLES / "cat.jpg", "JPEG", size=(480, 360))
    # Said 2 s in (espeak-ng), so the hit's time shows the speech is placed, not just found.
    spoken_video(SAMPLES / SPOKEN_SAMPLE, SPOKEN_SENTENCE, at_s=2.0, duration_s=6.0, size=(320, 240))


if __name__ == "__main__":
    main()
