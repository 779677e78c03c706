"""Which demuxed packets reach the decoder: all of them, only those a wanted frame depends on, or keyframes.

Decoding, not demuxing, is the cost. When the caller only needs the first frame at or after
`wanted_s` (sparse sampling), a group of pictures (keyframe up to the next keyframe) that holds
no such frame is never decoded: its packets wait in a buffer and are dropped when the next
keyframe arrives. A GOP that does hold one is decoded from its keyframe up to that frame, so
every frame that comes out is exact (no "nearest keyframe" approximation), and segment
boundaries and sample times match dense decoding. The one exception is open-GOP streams,
whose leading B-frames may refer back to a skipped GOP (see the keyframe branch below).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Final, Literal

from av.packet import Packet

FeedMode = Literal["dense", "sparse", "keyframes"]

_EPS: Final = 1e-6
_PTS_RESET_S: Final = 2.0  # packet times this far backwards: timestamps were reset, stop skipping


class PacketFeed:
    """Filters one stream's packets for the decoder; the consumer moves `wanted_s` forward.

    Times are seconds on the media timeline: packet pts minus `origin_s`. Packets without a
    pts (raw elementary streams) cannot be placed and are always decoded. `end_s` is the end
    of the last packet seen, which is the media's end once the feed is exhausted even when
    the last frames were never decoded.
    """

    def __init__(self, packets: Iterable[Packet], mode: FeedMode, origin_s: float | None) -> None:
        self._packets = packets
        self.mode: FeedMode = mode
        self.origin_s = origin_s
        self.wanted_s = 0.0
        self.end_s = 0.0
        self.skipped = 0  # packets never sent to the decoder

    def __iter__(self) -> Iterator[Packet]:
        if self.mode == "dense":
            yield from self._packets  # nothing to decide, so no per-packet cost
            return
        pending: list[Packet] = []  # undecoded packets of the current GOP
        latest = -math.inf
        time_base: float | None = None
        for packet in self._packets:
            if packet.size == 0:  # the demuxer's end-of-stream packet: flushes the decoder
                self.skipped += len(pending)
                pending.clear()
                yield packet
                continue
            if time_base is None and packet.time_base is not None:
                time_base = float(packet.time_base)  # one stream, one time base; floats are cheap
            t = self._time(packet, time_base)
            if t is not None:
                self.end_s = max(self.end_s, t + (packet.duration or 0) * (time_base or 0.0))
                if t < latest - _PTS_RESET_S and self.mode == "sparse":
                    self.mode = "dense"  # times went backwards: `wanted_s` no longer compares
                latest = max(latest, t)
            if self.mode == "dense":
                yield packet
                continue
            if self.mode == "keyframes":
                if packet.is_keyframe:
                    yield packet
                else:
                    self.skipped += 1
                continue
            if packet.is_keyframe:
                # The previous GOP's packets still pending hold no wanted frame and are never
                # decoded. In a closed GOP nothing from this keyframe on refers back to them. In
                # an open GOP (MPEG-2, HEVC CRA, H.264 non-IDR I-frames) the B-frames right after
                # the keyframe in decode order may reference the previous GOP's last pictures,
                # which may be among those dropped: such frames decode with artefacts or the
                # decoder drops them. Only these leading frames are affected, and they come
                # before the keyframe in display order; a sample that falls on one can differ
                # from what dense decoding gives.
                self.skipped += len(pending)
                pending.clear()
            pending.append(packet)
            if t is None or t >= self.wanted_s - _EPS:
                yield from pending
                pending.clear()
        self.skipped += len(pending)

    def _time(self, packet: Packet, time_base: float | None) -> float | None:
        if packet.pts is None or time_base is None or self.origin_s is None:
            return None
        return packet.pts * time_base - self.origin_s
