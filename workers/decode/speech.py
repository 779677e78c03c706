"""Speech chunks out of the audio track: the decode stage's second output.

The segmenter's demux loop hands every audio packet to `SpeechExtractor.push`, so the object
is read once: audio.py decodes and resamples it to 16 kHz mono, vad.py marks each 32 ms window
as speech or not (silero-vad behind an energy gate), and `_Chunker` turns the windows into
chunks: stretches of speech merged across pauses shorter than `min_silence_s`, padded by
`PAD_S` on both sides, dropped when they hold less than `MIN_SPEECH_S` of speech (a click or a
cough), and cut so no chunk is longer than `max_chunk_s`: at the longest pause inside it, or
hard at the limit when there is none. Each chunk is FLAC (16 kHz mono s16) encoded in memory,
split again in the rare case it exceeds `max_chunk_bytes` (30 s of speech is ~0.4-0.6 MB of
FLAC; 30 s of white noise ~0.96 MB).

Memory is one chunk's samples (30 s at 16 kHz, 1.9 MB as float32) plus a window, whatever the
media's length; chunks wait in `ready` only until the segmenter's next segment. Audio past
the policy's `max_duration_s` is not decoded (a file that hides its length from the
declared-duration check), and bad audio never fails the object: see audio.py.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from typing import Final

import av
import numpy as np
import structlog
from av.audio.stream import AudioStream
from av.packet import Packet

from workers.decode.audio import RATE, AudioTrack, Samples
from workers.decode.policy import SpeechPolicy
from workers.decode.vad import WINDOW, VoiceDetector

log = structlog.get_logger(__name__)

PAD_S: Final = 0.2  # kept before the first and after the last speech window of a chunk
MIN_SPEECH_S: Final = 0.25  # a stretch with less speech than this is a click, not words
_WINDOW_S: Final = WINDOW / RATE
_HOLE_S: Final = 0.25  # samples arriving this much later than expected: the track has a hole


@dataclass(frozen=True)
class DecodedSpeech:
    """One stretch of speech: `index` counts the object's chunks from 0 in time order; times
    are absolute media seconds; `flac` is 16 kHz mono FLAC; `language` the audio stream's
    declared language tag (ISO 639-2 as containers store it, e.g. "eng"), if any."""

    index: int
    start_s: float
    end_s: float
    flac: bytes
    language: str | None = None


def encode_flac(samples: Samples) -> bytes:
    """`samples` (float32 in [-1, 1], 16 kHz mono) as a FLAC file in memory, s16."""
    pcm = np.clip(np.round(samples * 32767.0), -32768, 32767).astype(np.int16)
    out = BytesIO()
    with av.open(out, mode="w", format="flac") as container:
        stream = container.add_stream("flac", rate=RATE)
        assert isinstance(stream, AudioStream)
        stream.layout = "mono"
        stream.format = "s16"
        frame = av.AudioFrame.from_ndarray(pcm[None, :], format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return out.getvalue()


class _Chunker:
    """32 ms windows flagged speech or not -> (start_s, samples) stretches of speech."""

    def __init__(self, policy: SpeechPolicy) -> None:
        self._pad = max(1, round(PAD_S / _WINDOW_S))
        self._close_after = max(1, math.ceil(policy.min_silence_s / _WINDOW_S))
        self._max_windows = int(policy.max_chunk_s / _WINDOW_S)
        self._min_speech = max(1, math.ceil(MIN_SPEECH_S / _WINDOW_S))
        self._before: deque[tuple[float, Samples]] = deque(maxlen=self._pad)  # while no stretch is open
        self._start_s = 0.0
        self._windows: list[Samples] = []
        self._flags: list[bool] = []
        self._silent = 0  # non-speech windows since the stretch's last speech window
        self._was_cut = False  # the open stretch already gave a chunk at max_chunk_s

    def add(self, t: float, window: Samples, speech: bool) -> list[tuple[float, Samples]]:
        if not self._windows:
            if not speech:
                self._before.append((t, window))
                return []
            self._start_s = self._before[0][0] if self._before else t
            self._windows = [w for _, w in self._before]
            self._flags = [False] * len(self._windows)
            self._before.clear()
            self._was_cut = False
        self._windows.append(window)
        self._flags.append(speech)
        self._silent = 0 if speech else self._silent + 1
        if self._silent >= self._close_after:
            return self.close()
        if len(self._windows) >= self._max_windows:
            return [self._cut()]
        return []

    def close(self, *, hole: bool = False) -> list[tuple[float, Samples]]:
        """End the open stretch (a long pause, the end of the audio, or a `hole` in the track,
        after which the windows before it are no padding)."""
        if not self._windows:
            if hole:
                self._before.clear()
            return []
        last = len(self._flags) - 1 - self._flags[::-1].index(True) if True in self._flags else -1
        keep = min(len(self._windows), last + 1 + self._pad)
        speech = sum(self._flags[:keep])
        chunk = (self._start_s, np.concatenate(self._windows[:keep]))
        tail_start = self._start_s + keep * _WINDOW_S
        self._before.clear()
        if not hole:
            for i, window in enumerate(self._windows[keep:]):
                self._before.append((tail_start + i * _WINDOW_S, window))
        self._windows, self._flags, self._silent = [], [], 0
        if last < 0 or (speech < self._min_speech and not self._was_cut):
            return []
        return [chunk]

    def _cut(self) -> tuple[float, Samples]:
        """The open stretch reached max_chunk_s: give its head up to the middle of its longest
        pause in the second half (anywhere, if none there; hard at the limit when it has no
        pause) and keep the rest open. Preferring the second half keeps chunks near
        max_chunk_s: the longest pause of 70 s of espeak-ng speech sits 4 s in, and cutting
        there gave 8 chunks of 3-29 s where the second half gives 3 of 17-29 s."""
        pauses: list[tuple[int, int]] = []  # (start, length) of runs of non-speech after speech
        run = 0
        for i, flag in enumerate(self._flags):
            if flag:
                if run and i - run > 0:
                    pauses.append((i - run, run))
                run = 0
            else:
                run += 1
        if run and len(self._flags) - run > 0:
            pauses.append((len(self._flags) - run, run))
        half = len(self._flags) // 2
        late = [p for p in pauses if p[0] >= half] or pauses
        if late:
            start, length = max(late, key=lambda p: p[1])
            cut = start + length // 2 if length > 1 else start
        else:
            cut = len(self._windows)
        cut = max(1, cut)
        chunk = (self._start_s, np.concatenate(self._windows[:cut]))
        self._start_s += cut * _WINDOW_S
        self._windows, self._flags = self._windows[cut:], self._flags[cut:]
        self._was_cut = True
        return chunk


class SpeechExtractor:
    """One object's audio stream -> DecodedSpeech chunks; the demux loop pushes its packets."""

    def __init__(
        self, stream: AudioStream, policy: SpeechPolicy, *, origin_s: float | None, max_duration_s: float, shown: str
    ) -> None:
        self._policy = policy
        self._track = AudioTrack(stream, origin_s)
        self._vad = VoiceDetector()
        self._chunker = _Chunker(policy)
        self._max_duration_s = max_duration_s
        self._shown = shown
        language = stream.metadata.get("language") or stream.language
        self._language = language if language and language != "und" else None
        self._pending: Samples = np.zeros(0, dtype=np.float32)
        self._pending_s = 0.0  # media time of _pending[0]
        self._started = False
        self._over_limit = False
        self._ended = False
        self._stream_index = stream.index
        self._index = 0
        self._flac_splits = 0
        self.ready: deque[DecodedSpeech] = deque()  # chunks not yet taken by the segmenter

    @property
    def stream_index(self) -> int:
        return self._stream_index

    def push(self, packet: Packet | None) -> None:
        """One audio packet (None: the end of the stream; more Nones are ignored)."""
        if self._ended or (self._over_limit and packet is not None):
            return
        self._ended = packet is None
        for t, samples in self._track.decode(packet):
            self._samples(t, samples)
            if self._over_limit:
                break
        if packet is None:
            self._emit(self._chunker.close())

    def take(self) -> Iterator[DecodedSpeech]:
        while self.ready:
            yield self.ready.popleft()

    def _samples(self, t: float, samples: Samples) -> None:
        # audio.py counts samples and only jumps forward, at a hole in the track.
        if not self._started:
            self._started, self._pending_s = True, t
        elif t - (self._pending_s + self._pending.size / RATE) > _HOLE_S:
            self._emit(self._chunker.close(hole=True))  # what was open ends at the hole
            self._vad.interrupt()
            self._pending, self._pending_s = samples[:0], t
        if t > self._max_duration_s:
            self._over_limit = True
            log.warning("speech_audio_over_limit", source=self._shown, media_s=round(t, 1))
            return
        pending = np.concatenate([self._pending, samples]) if self._pending.size else samples
        whole = pending.size // WINDOW * WINDOW
        threshold = self._policy.vad_threshold
        for start in range(0, whole, WINDOW):
            window = pending[start : start + WINDOW]
            at = self._pending_s + start / RATE
            self._emit(self._chunker.add(at, window, self._vad.probability(window) >= threshold))
        self._pending_s += whole / RATE
        self._pending = pending[whole:].copy()

    def _emit(self, stretches: list[tuple[float, Samples]]) -> None:
        for start_s, samples in stretches:
            for piece_s, piece, flac in self._encoded(start_s, samples):
                self.ready.append(
                    DecodedSpeech(
                        self._index,
                        round(piece_s, 3),
                        round(piece_s + piece.size / RATE, 3),
                        flac,
                        self._language,
                    )
                )
                self._index += 1

    def _encoded(self, start_s: float, samples: Samples) -> Iterator[tuple[float, Samples, bytes]]:
        """FLAC of the stretch, split at its quietest window near the middle while over max_chunk_bytes."""
        flac = encode_flac(samples)
        if len(flac) <= self._policy.max_chunk_bytes or samples.size < 2 * WINDOW:
            yield start_s, samples, flac
            return
        self._flac_splits += 1
        windows = samples[: samples.size // WINDOW * WINDOW].reshape(-1, WINDOW)
        third = max(1, len(windows) // 3)
        energy = np.square(windows[third : len(windows) - third], dtype=np.float64).mean(axis=1)
        cut = (third + int(np.argmin(energy))) * WINDOW if energy.size else samples.size // 2
        yield from self._encoded(start_s, samples[:cut])
        yield from self._encoded(start_s + cut / RATE, samples[cut:])

    def log_summary(self) -> None:
        stats, vad = self._track.stats, self._vad.stats
        if stats.decode_errors:
            log.warning(
                "speech_decode_errors_skipped",
                source=self._shown,
                errors=stats.decode_errors,
                first_error=stats.first_error,
                packets=stats.packets,
            )
        log.debug(
            "speech_extracted",
            source=self._shown,
            chunks=self._index,
            audio_s=round(stats.samples / RATE, 3),
            vad_windows=vad.windows,
            model_windows=vad.model_windows,
            flac_splits=self._flac_splits,
        )
