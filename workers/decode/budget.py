"""How much decoding one object may cost, so a small file cannot hold a worker for minutes.

Decoded pixels are the cost. Every object may decode `base_pixels` (a few frames at the
largest accepted size); beyond that, the pixels decoded so far must stay within both

- `pixel_rate` per second of media time reached: real video at 4K60 decodes ~5e8 px/s, so
  a stream of huge frames far faster than that is refused, and
- `pixels_per_byte` per compressed byte demuxed: even static video re-encoded at the lowest
  bitrate stays near 4e4 px/byte (its keyframes carry the bytes), while an animation that
  repaints a 64 Mpx canvas from a 23-byte frame is ~3e6 px/byte.

A wall-clock limit (`max_seconds`) bounds whatever the counts miss (slow codecs, slow reads).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from workers.decode.errors import MediaError


@dataclass
class DecodeBudget:
    base_pixels: int
    pixel_rate: float  # pixels per second of media; 0 = no limit
    pixels_per_byte: float  # pixels per compressed byte; 0 = no limit
    max_seconds: float  # wall clock from the start of decoding; 0 = no limit
    shown: str = ""
    clock: Callable[[], float] = time.monotonic
    pixels: int = 0
    bytes_in: int = 0
    started: float = field(default=0.0)

    def __post_init__(self) -> None:
        self.started = self.clock()

    def add_bytes(self, count: int) -> None:
        self.bytes_in += count

    def charge(self, pixels: int, media_s: float) -> None:
        """Count one decoded frame at media time `media_s`; raise when over budget."""
        self.pixels += pixels
        if self.pixels > self.base_pixels:
            if self.pixel_rate and self.pixels > self.base_pixels + self.pixel_rate * media_s:
                self._refuse(
                    f"decoded {self.pixels:.3g} pixels by {media_s:.2f} s of media, over the budget of "
                    f"{self.base_pixels:.3g} + {self.pixel_rate:.3g} per media second "
                    "(CAPSTREAM_MAX_DECODE_PIXEL_RATE)"
                )
            if self.pixels_per_byte and self.pixels > self.base_pixels + self.pixels_per_byte * self.bytes_in:
                self._refuse(
                    f"decoded {self.pixels:.3g} pixels from {self.bytes_in} compressed bytes, over the budget of "
                    f"{self.base_pixels:.3g} + {self.pixels_per_byte:.3g} per byte (CAPSTREAM_MAX_PIXELS_PER_BYTE)"
                )
        if self.max_seconds and (elapsed := self.clock() - self.started) > self.max_seconds:
            self._refuse(f"still decoding after {elapsed:.1f} s (CAPSTREAM_MAX_DECODE_S={self.max_seconds:g})")

    def _refuse(self, detail: str) -> None:
        raise MediaError("decode_budget_exceeded", f"{self.shown}: {detail}")
