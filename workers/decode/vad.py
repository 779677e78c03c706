"""Voice-activity detection on 16 kHz mono: silero-vad behind an energy gate.

silero-vad (the JIT model in the `silero_vad` wheel) gives the speech probability of each
512-sample (32 ms) window. It costs ~0.5-1.1 ms per window on this machine's cores (15-35 ms
per media second, 30-66x realtime), while the energy of a window costs ~3 us. A window whose RMS
is under `ENERGY_FLOOR_DBFS` is not speech whatever the model says (espeak-ng's pauses and AAC's
digital silence measure -240 dBFS, quiet speech -40 dBFS), so it gets probability 0 without
the model: a silent hour costs the decode and the gate only, and an object whose audio never
crosses the floor never loads the model at all. Measured figures are in the tests' report
(tests/unit/test_decode_speech.py).

The model is stateful (an RNN over consecutive windows) and not safe to share between
threads, and decode runs on a thread pool: each thread loads its own copy once (~0.1-1.2 s,
~2 MB), and each object starts from a reset state. After gated windows the state is reset
too, as at the start of a recording: the model then sees speech after silence as it was
trained to. torch is imported on first use, so workers without speech never import it.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from workers.decode.audio import Samples

WINDOW: Final = 512  # samples at 16 kHz: the window silero-vad v5 takes
ENERGY_FLOOR_DBFS: Final = -60.0
_FLOOR_RMS: Final = 10 ** (ENERGY_FLOOR_DBFS / 20)

_local = threading.local()


def silero_model() -> Any:
    """This thread's silero-vad model, loaded on first use."""
    model = getattr(_local, "model", None)
    if model is None:
        from silero_vad import load_silero_vad  # torch: ~1 s to import, only when speech is on

        model = _local.model = load_silero_vad()
    return model


@dataclass(slots=True)
class VadStats:
    windows: int = 0
    model_windows: int = 0  # windows the energy gate let through to the model


class VoiceDetector:
    """Speech probability per 512-sample window, for one object."""

    def __init__(self) -> None:
        self._model: Any = None
        self._fresh = True  # reset the model's state before the next window it sees
        self.stats = VadStats()

    def probability(self, window: Samples) -> float:
        self.stats.windows += 1
        if float(np.sqrt(np.mean(np.square(window, dtype=np.float64)))) < _FLOOR_RMS:
            self._fresh = True
            return 0.0
        import torch

        if self._model is None:
            self._model = silero_model()
        if self._fresh:
            self._model.reset_states()
            self._fresh = False
        self.stats.model_windows += 1
        with torch.inference_mode():
            prob = float(self._model(torch.from_numpy(np.ascontiguousarray(window)), 16_000))
        return prob if math.isfinite(prob) else 0.0

    def interrupt(self) -> None:
        """The next window does not follow the previous one (a hole in the track)."""
        self._fresh = True
