"""Decoded frames placed on one increasing media timeline, from FFmpeg packets or a Pillow animation.

Real files have missing, duplicated, late and reset timestamps, and decoders reject packets:
here they become a clean sequence of `TimedFrame`s (time, display duration, picture,
rotation), so segmentation never sees a timestamp go backwards. Packets are decoded the way
the ffmpeg CLI does it (skip what the decoder rejects, stop at a damaged tail), and what was
skipped or dropped is counted in `DecodeStats` for the caller's log line. Animated WebP, which
FFmpeg's webp decoder rejects, is read through Pillow and timed by its per-frame durations.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from io import BytesIO
from typing import Final

import av
import av.error
from av.container import InputContainer
from av.packet import Packet
from av.video.stream import VideoStream
from PIL import Image

from workers.decode.errors import MediaError
from workers.decode.frames import normalize_rotation

_DEFAULT_FPS: Final = 25.0
_PTS_RESET_S: Final = 2.0  # this long of backwards timestamps means they were reset


@dataclass(slots=True)
class TimedFrame:
    """One decoded picture, placed on the media timeline."""

    t: float  # seconds on the media timeline
    duration: float  # how long it is displayed, > 0
    frame: av.VideoFrame | Image.Image
    rotation: int  # counter-clockwise display rotation: 0, 90, 180 or 270


@dataclass(slots=True)
class DecodeStats:
    """What decoding one object produced and skipped: for its log lines and error messages."""

    frames: int = 0
    decode_errors: int = 0
    first_error: str = ""
    dropped: int = 0  # frames whose timestamp went backwards


def origin_s(container: InputContainer) -> float | None:
    """The container's start time in seconds: media time 0.0 (None when not declared)."""
    return container.start_time / av.time_base if container.start_time is not None else None


def _decode_packets(stream: VideoStream, packets: Iterable[Packet], stats: DecodeStats) -> Iterator[av.VideoFrame]:
    """Decode like the ffmpeg CLI: skip packets the decoder rejects, stop at a damaged tail."""
    it = iter(packets)
    while True:
        try:
            packet = next(it)
        except StopIteration:
            return
        except av.error.InvalidDataError as exc:
            # The demuxer cannot resynchronise; keep what was decoded, then drain the decoder.
            stats.decode_errors += 1
            stats.first_error = stats.first_error or f"demux: {exc.strerror}"
            try:
                yield from stream.decode(None)
            except (av.error.InvalidDataError, av.error.EOFError):
                pass
            return
        try:
            frames = stream.decode(packet)
        except av.error.InvalidDataError as exc:
            stats.decode_errors += 1
            stats.first_error = stats.first_error or f"decode: {exc.strerror}"
            continue
        yield from frames


def timed_frames(
    container: InputContainer, stream: VideoStream, packets: Iterable[Packet], stats: DecodeStats
) -> Iterator[TimedFrame]:
    """Frames with increasing media time.

    Missing pts are extrapolated from the previous frame's duration (or the stream rate). A
    frame whose pts is not after the previous one (a duplicate, or a late frame after decode
    errors) is dropped; if that goes on for a while, the timestamps were reset (concatenated
    streams) and the timeline continues from the previous frame instead.
    """
    rate = stream.average_rate or stream.guessed_rate
    default_dt = 1.0 / float(rate) if rate and rate > 0 else 1.0 / _DEFAULT_FPS
    origin = origin_s(container)
    offset = 0.0
    backwards = 0
    reset_after = max(8, round(_PTS_RESET_S / default_dt))
    previous: TimedFrame | None = None
    # A float, not the Fraction PyAV returns: Fraction arithmetic per frame cost ~10% of decoding.
    stream_time_base = float(stream.time_base) if stream.time_base else None
    for frame in _decode_packets(stream, packets, stats):
        time_base = stream_time_base if stream_time_base is not None else _float_or_none(frame.time_base)
        t: float | None = None
        if frame.pts is not None and time_base is not None:
            raw = frame.pts * time_base
            if origin is None:
                origin = raw
            t = raw - origin + offset
        if previous is None:
            t = max(0.0, t or 0.0)
        elif t is None:
            t = previous.t + previous.duration
        elif t <= previous.t:
            backwards += 1
            if backwards <= reset_after:
                stats.dropped += 1
                continue
            offset += previous.t + previous.duration - t
            t = previous.t + previous.duration
        backwards = 0
        duration = frame.duration * time_base if frame.duration and time_base is not None else 0.0
        current = TimedFrame(t, duration if duration > 0 else default_dt, frame, normalize_rotation(frame.rotation))
        stats.frames += 1
        yield current
        previous = current


def _float_or_none(value: Fraction | None) -> float | None:
    return float(value) if value else None


def is_animated_webp(data: bytes) -> bool:
    # RIFF....WEBP + VP8X chunk whose flags byte has the animation bit.
    return len(data) > 20 and data[:4] == b"RIFF" and data[8:16] == b"WEBPVP8X" and bool(data[20] & 0x02)


def open_animation(data: bytes, shown: str) -> Image.Image:
    """Animated WebP through Pillow: FFmpeg's webp decoder rejects animations."""
    try:
        return Image.open(BytesIO(data))
    except Image.DecompressionBombError as exc:  # before the canvas is allocated
        raise MediaError("resolution_too_large", f"{shown}: animated WebP canvas is too large ({exc})") from exc
    except (OSError, ValueError) as exc:
        raise MediaError("corrupt_media", f"{shown}: animated WebP could not be read by Pillow ({exc})") from exc


def pillow_frames(image: Image.Image, shown: str, stats: DecodeStats) -> Iterator[TimedFrame]:
    """Each animation frame as the composited RGBA canvas, timed by the per-frame durations."""
    try:
        with image:
            t = 0.0
            for i in range(getattr(image, "n_frames", 1)):
                image.seek(i)
                canvas = image.convert("RGBA")  # loads the frame; "duration" is only set after that
                # Browsers show 0-duration frames for 100 ms; do the same.
                duration = max(0.0, float(image.info.get("duration", 0) or 0)) / 1000.0 or 0.1
                stats.frames += 1
                yield TimedFrame(t, duration, canvas, 0)
                t += duration
    except (OSError, EOFError, ValueError) as exc:
        raise MediaError("corrupt_media", f"{shown}: animated WebP frame could not be decoded ({exc})") from exc
