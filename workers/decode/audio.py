"""An audio stream's packets -> 16 kHz mono float32 samples placed on the media timeline.

The speech path's decoder, fed one packet at a time by the same demux loop as the video, so
the object is read once and only one packet's samples are held here. Bad audio never fails
the object: a packet the decoder rejects is skipped and counted (like the video path's
`media_decode_errors_skipped`), a stream without a decoder gives no samples, and a change of
sample format, rate or layout mid-stream (concatenated files) gets a new resampler instead of
PyAV's ValueError.

Times: the first decoded frame's pts (minus the container's start time, `origin_s`, as for the
frames) anchors the samples; after that they are counted, because AAC and friends put
rounded or missing pts on frames. A forward jump of more than `_GAP_S` in the pts (a hole in
the track, or a file that declares 10 hours in a few packets) re-anchors on the pts instead of
filling the hole with silence, so decode cost follows the packets present, never the declared
time. A backward jump (reset timestamps) keeps counting, as the frames' timeline does.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

import av
import av.error
import numpy as np
import numpy.typing as npt
from av.audio.frame import AudioFrame
from av.audio.resampler import AudioResampler
from av.audio.stream import AudioStream
from av.packet import Packet

RATE: Final = 16_000  # what silero-vad and Whisper take
_GAP_S: Final = 0.5  # a forward pts jump this long is a hole in the track: re-anchor, do not fill

Samples = npt.NDArray[np.float32]


@dataclass(slots=True)
class AudioStats:
    """What decoding one audio stream produced and skipped, for the object's log line."""

    packets: int = 0
    decode_errors: int = 0
    first_error: str = ""
    samples: int = 0  # at RATE, after resampling


class AudioTrack:
    """Decodes one audio stream's packets into (time, samples) blocks at RATE, mono."""

    def __init__(self, stream: AudioStream, origin_s: float | None) -> None:
        self._stream = stream
        self._origin = origin_s
        self._resampler: AudioResampler | None = None
        self._source_format: tuple[str, str, int] | None = None
        self._anchor_s: float | None = None
        self._count = 0  # samples emitted since the anchor
        self.stats = AudioStats()
        self.decodable = stream.codec_context is not None

    def decode(self, packet: Packet | None) -> Iterator[tuple[float, Samples]]:
        """Blocks of samples from one packet (None or an empty packet flushes the decoder),
        each with the media time of its first sample."""
        if not self.decodable:
            return
        if packet is not None and packet.size:
            self.stats.packets += 1
        try:
            frames = self._stream.decode(packet if packet is not None and packet.size else None)
        except (av.error.FFmpegError, ValueError) as exc:
            self.stats.decode_errors += 1
            self.stats.first_error = self.stats.first_error or f"audio decode: {exc}"
            return
        for frame in frames:
            yield from self._resampled(frame)
        if packet is None or not packet.size:
            yield from self._resampled(None)

    def _resampled(self, frame: AudioFrame | None) -> Iterator[tuple[float, Samples]]:
        if frame is not None:
            self._place(frame)
            source = (frame.format.name, frame.layout.name, frame.sample_rate)
            if source != self._source_format:
                if self._resampler is not None:  # drain the old one before switching
                    yield from self._blocks(self._resampler.resample(None))
                self._resampler = AudioResampler(format="flt", layout="mono", rate=RATE)
                self._source_format = source
        if self._resampler is None:
            return
        try:
            out = self._resampler.resample(frame)
        except (av.error.FFmpegError, ValueError) as exc:
            self.stats.decode_errors += 1
            self.stats.first_error = self.stats.first_error or f"audio resample: {exc}"
            self._resampler, self._source_format = None, None
            return
        yield from self._blocks(out)

    def _place(self, frame: AudioFrame) -> None:
        if frame.pts is None or frame.time_base is None:
            if self._anchor_s is None:
                self._anchor_s = 0.0
            return
        raw = float(frame.pts * frame.time_base)
        if self._origin is None:
            self._origin = raw
        t = raw - self._origin
        if self._anchor_s is None:
            self._anchor_s, self._count = max(0.0, t), 0
        elif t - (self._anchor_s + self._count / RATE) > _GAP_S:
            self._anchor_s, self._count = t, 0

    def _blocks(self, frames: list[AudioFrame]) -> Iterator[tuple[float, Samples]]:
        for out in frames:
            samples = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
            if not samples.size:
                continue
            yield (self._anchor_s or 0.0) + self._count / RATE, samples
            self._count += samples.size
            self.stats.samples += samples.size
