"""Media object -> stream of segments of sampled JPEG frames (the blocking core of the decode stage).

One path for stills and videos: every decoded frame feeds a cheap cut detector; a segment closes
on a hard cut, when it reaches the window length, or at the end of the media. Only the frames
sampled for a segment are converted to RGB at the model's size and JPEG-encoded, and a segment
is yielded as soon as it closes, so memory stays bounded by one segment whatever the length.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from io import BytesIO, RawIOBase
from itertools import chain
from typing import BinaryIO, Final, Literal
from urllib.parse import urlsplit, urlunsplit

import av
import av.error
import structlog
from av.container import InputContainer
from av.packet import Packet
from av.stream import Disposition
from av.video.reformatter import VideoReformatter
from av.video.stream import VideoStream
from PIL import Image

from workers.decode.allowlist import FILE_PROTOCOLS, NO_PROTOCOLS, URL_PROTOCOLS, forced_format, open_options
from workers.decode.budget import DecodeBudget
from workers.decode.declared import declared_size
from workers.decode.errors import MEDIA_ERROR_REASONS as MEDIA_ERROR_REASONS
from workers.decode.errors import MediaError as MediaError
from workers.decode.errors import MediaErrorReason as MediaErrorReason
from workers.decode.frames import (
    display_size,
    encode_within_budget,
    frame_to_image,
    normalize_rotation,
    target_size,
    uniform_indices,
)
from workers.decode.packets import FeedMode, PacketFeed
from workers.decode.scenes import CutDetector

log = structlog.get_logger(__name__)

SegmentMode = Literal["scene", "fixed", "keyframe"]
SEGMENT_MODES: Final[tuple[str, ...]] = ("scene", "fixed", "keyframe")

# Range-request streaming for presigned URLs (see ENVIRONMENT.md): FFmpeg's defaults read the
# whole object, sometimes more than once.
URL_OPTIONS: Final[dict[str, str]] = {
    "request_size": "262144",
    "initial_request_size": "65536",
    "multiple_requests": "1",
}
_IMAGE_FORMATS: Final = frozenset({"image2", "image2pipe"})
_EPS: Final = 1e-6
_DEFAULT_FPS: Final = 25.0
_PTS_RESET_S: Final = 2.0  # this long of backwards timestamps means they were reset
_MIN_SEGMENT_BYTES: Final = 4096  # a 32x32 JPEG at the lowest quality step is ~0.9 kB
# Every object may decode this many frames at the largest accepted size before the
# per-media-second and per-byte budgets apply: stills and short clips never hit them.
_BASE_BUDGET_FRAMES: Final = 4


@dataclass(frozen=True)
class SegmentPolicy:
    """How media is cut into segments and how each segment's frames are sampled and encoded.

    `mode`: "scene" looks at every frame for hard cuts (plus `max_segment_s` windows); "fixed"
    cuts windows only and decodes just the GOPs that hold a sampled frame; "keyframe" decodes
    keyframes only (windows, frames sampled among keyframes), for long media.
    """

    mode: SegmentMode = "scene"
    max_segment_s: float = 10.0  # fixed window when no cut happens
    min_scene_s: float = 1.0  # no cut closer than this to the segment start
    scene_threshold: float = 0.35  # luma-histogram distance that counts as a cut; 0 disables cuts
    sample_fps: float = 1.0  # frames chosen per second of segment
    min_frames: int = 1  # per segment, by sampling between grid points when it is short
    max_frames: int = 8  # per segment (uniformly thinned if more)
    max_pixels: int = 448 * 448  # per frame after resize; sides multiples of 32, aspect kept
    jpeg_quality: int = 85
    max_segment_bytes: int = 900_000  # total JPEG bytes per segment
    max_duration_s: float = 4 * 3600
    max_source_pixels: int = 8192 * 8192
    decode_threads: int = 0  # FFmpeg decoder threads per media; 0 lets FFmpeg choose
    # Decode budget per object (see budget.py); 0 disables a limit.
    max_decode_s: float = 1800.0  # wall clock
    max_decode_pixel_rate: float = 1e9  # decoded pixels per second of media (4K60 is ~5e8)
    max_pixels_per_byte: float = 1e6  # decoded pixels per compressed byte

    @property
    def detects_cuts(self) -> bool:
        return self.mode == "scene" and self.scene_threshold > 0.0

    def __post_init__(self) -> None:
        problems = [
            name
            for name, ok in (
                ("max_segment_s", self.max_segment_s > 0),
                ("min_scene_s", self.min_scene_s >= 0),
                ("scene_threshold", 0.0 <= self.scene_threshold <= 1.0),
                ("sample_fps", self.sample_fps > 0),
                ("mode", self.mode in SEGMENT_MODES),
                ("min_frames", 1 <= self.min_frames <= self.max_frames),
                ("max_frames", self.max_frames >= 1),
                ("max_pixels", self.max_pixels >= 32 * 32),
                ("jpeg_quality", 1 <= self.jpeg_quality <= 100),
                ("max_segment_bytes", self.max_segment_bytes >= _MIN_SEGMENT_BYTES),
                ("max_duration_s", self.max_duration_s > 0),
                ("max_source_pixels", self.max_source_pixels > 0),
                ("decode_threads", self.decode_threads >= 0),
                ("max_decode_s", self.max_decode_s >= 0),
                ("max_decode_pixel_rate", self.max_decode_pixel_rate >= 0),
                ("max_pixels_per_byte", self.max_pixels_per_byte >= 0),
            )
            if not ok
        ]
        if problems:
            raise ValueError(f"invalid SegmentPolicy field(s): {', '.join(problems)} ({self!r})")


@dataclass(frozen=True)
class SegmentFrame:
    """One sampled frame: `pts_s` on the media timeline, JPEG at `width` x `height`."""

    index: int
    pts_s: float
    width: int
    height: int
    jpeg: bytes


@dataclass(frozen=True)
class DecodedSegment:
    """Frames of [start_s, end_s); a still image is one segment with start_s == end_s == 0."""

    index: int
    start_s: float
    end_s: float
    reason: Literal["cut", "window", "end"]
    frames: tuple[SegmentFrame, ...]


@dataclass(frozen=True)
class MediaInfo:
    """What the container declares, before decoding (duration 0.0 when not declared)."""

    kind: Literal["image", "video"]
    duration_s: float
    width: int
    height: int
    codec: str
    fps: float | None


def redact(source: str) -> str:
    """`source` without query string or credentials: presigned URLs must not reach logs or DLQs."""
    parts = urlsplit(source)
    if parts.scheme not in ("http", "https"):
        return source
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def _is_url(source: str) -> bool:
    scheme = urlsplit(source).scheme.lower()
    if scheme in ("http", "https"):
        return True
    # One-letter "schemes" are Windows drive letters.
    if len(scheme) > 1 and scheme != "file":
        raise ValueError(f"unsupported source scheme {scheme!r}: expected a local path or http(s) URL")
    return False


def open_media(
    source: str | BinaryIO | RawIOBase,
    *,
    options: dict[str, str] | None = None,
    timeout_s: float = 20.0,
    max_pixels: int = 8192 * 8192,
    name: str = "",
) -> InputContainer:
    """Open a local path, an http(s) URL or a readable binary file object for demuxing.

    Only the demuxers and protocols of allowlist.py may run, so the media cannot make FFmpeg
    open anything else; decoders refuse pictures over `max_pixels`, while probing too.
    Undecodable or refused input raises MediaError; network failures and HTTP errors
    propagate unchanged (they may be transient). `name` is how a file object is shown.
    """
    remote = False
    forced: str | None = None
    if isinstance(source, str):
        remote = _is_url(source)
        protocols = URL_PROTOCOLS if remote else FILE_PROTOCOLS
        forced = None if remote else forced_format(source)
        shown = redact(source)
    else:
        protocols = NO_PROTOCOLS
        shown = name or "<stream>"
    merged = open_options(protocols, max_pixels)
    if remote:
        merged |= URL_OPTIONS
    merged |= options or {}
    try:
        container = av.open(source, mode="r", format=forced, options=merged, timeout=(timeout_s, timeout_s))
    except av.error.InvalidDataError as exc:
        raise MediaError(
            "corrupt_media",
            f"{shown}: not a readable media file; FFmpeg probed all its demuxers and none could "
            f"parse it, or the container is damaged or truncated ({exc.strerror})",
        ) from exc
    except (av.error.DemuxerNotFoundError, av.error.DecoderNotFoundError, av.error.PatchWelcomeError) as exc:
        raise MediaError("unsupported_media", f"{shown}: FFmpeg cannot read this format ({exc.strerror})") from exc
    except av.error.ArgumentError as exc:
        # FFmpeg's answer when the probed demuxer is not on the allow-list ("Format not on
        # whitelist"): playlists, manifests, concat lists, file sequences, text.
        raise MediaError(
            "unsupported_media",
            f"{shown}: not a self-contained video or image format; playlists, manifests, concat "
            f"lists, image sequences and text are refused, upload the media itself ({exc.strerror})",
        ) from exc
    except av.error.FFmpegError as exc:
        if remote and exc.filename:
            # Same exception class (callers classify on it), without the presigned query string.
            raise _without_url(exc, shown) from None
        raise
    return container


def _without_url(exc: av.error.FFmpegError, shown: str) -> Exception:
    try:
        return type(exc)(exc.errno or 0, exc.strerror or "", shown)
    except Exception:  # an av error class with another constructor: keep the errno, lose the class
        return OSError(exc.errno or 0, exc.strerror or "", shown)


def select_video_stream(container: InputContainer, source: str = "") -> VideoStream:
    """First real video stream (cover art attached to audio files does not count)."""
    for stream in container.streams.video:
        if not stream.disposition & Disposition.attached_pic:
            return stream
    kinds = ", ".join(f"{s.type}:{_codec_name(s)}" for s in container.streams) or "none"
    raise MediaError(
        "no_video_stream",
        f"{redact(source) or 'media'}: {container.format.name} has no video or image stream (streams: {kinds})",
    )


def _codec_name(stream: object) -> str:
    ctx = getattr(stream, "codec_context", None)
    return str(getattr(ctx, "name", None) or "unknown")


def probe_media(container: InputContainer, stream: VideoStream) -> MediaInfo:
    """Declared properties of `stream`; size is the coded size, before any display rotation."""
    fmt = container.format.name
    codec = _codec_name(stream)
    is_image = (fmt in _IMAGE_FORMATS or fmt.endswith("_pipe")) and codec != "gif"
    duration = 0.0
    if container.duration is not None and container.duration > 0:
        duration = container.duration / av.time_base
    elif stream.duration and stream.time_base:
        duration = float(stream.duration * stream.time_base)
    rate = stream.average_rate or stream.guessed_rate
    ctx = stream.codec_context
    return MediaInfo(
        kind="image" if is_image else "video",
        duration_s=0.0 if is_image else duration,
        width=int(ctx.width or 0),
        height=int(ctx.height or 0),
        codec=codec,
        fps=float(rate) if rate and not is_image else None,
    )


def _check_limits(info: MediaInfo, policy: SegmentPolicy, shown: str) -> None:
    if info.duration_s > policy.max_duration_s:
        raise MediaError(
            "media_too_long",
            f"{shown}: declared duration {info.duration_s:.1f} s exceeds the limit of {policy.max_duration_s:.0f} s",
        )
    _check_resolution(info.width, info.height, policy, shown)


def _check_resolution(width: int, height: int, policy: SegmentPolicy, shown: str) -> None:
    if width * height > policy.max_source_pixels:
        raise MediaError(
            "resolution_too_large",
            f"{shown}: {width}x{height} exceeds the limit of {policy.max_source_pixels} pixels",
        )


@dataclass(slots=True)
class _Decoded:
    t: float  # seconds on the media timeline
    duration: float  # how long it is displayed, > 0
    frame: av.VideoFrame | Image.Image
    rotation: int  # counter-clockwise display rotation: 0, 90, 180 or 270


@dataclass(slots=True)
class _Stats:
    frames: int = 0
    decode_errors: int = 0
    first_error: str = ""
    dropped: int = 0  # frames whose timestamp went backwards


def _decode_packets(stream: VideoStream, packets: Iterable[Packet], stats: _Stats) -> Iterator[av.VideoFrame]:
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


def _timed_frames(
    container: InputContainer, stream: VideoStream, packets: Iterable[Packet], stats: _Stats
) -> Iterator[_Decoded]:
    """Frames with increasing media time.

    Missing pts are extrapolated from the previous frame's duration (or the stream rate). A
    frame whose pts is not after the previous one (a duplicate, or a late frame after decode
    errors) is dropped; if that goes on for a while, the timestamps were reset (concatenated
    streams) and the timeline continues from the previous frame instead.
    """
    rate = stream.average_rate or stream.guessed_rate
    default_dt = 1.0 / float(rate) if rate and rate > 0 else 1.0 / _DEFAULT_FPS
    origin = _origin_s(container)
    offset = 0.0
    backwards = 0
    reset_after = max(8, round(_PTS_RESET_S / default_dt))
    previous: _Decoded | None = None
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
        current = _Decoded(t, duration if duration > 0 else default_dt, frame, normalize_rotation(frame.rotation))
        stats.frames += 1
        yield current
        previous = current


def _float_or_none(value: Fraction | None) -> float | None:
    return float(value) if value else None


def _feed_mode(policy: SegmentPolicy, codec: str) -> FeedMode:
    # A GIF has one keyframe (later frames patch the canvas); animations are short anyway.
    if policy.mode == "keyframe" and codec != "gif":
        return "keyframes"
    return "dense" if policy.detects_cuts else "sparse"


def _origin_s(container: InputContainer) -> float | None:
    return container.start_time / av.time_base if container.start_time is not None else None


def _is_animated_webp(data: bytes) -> bool:
    # RIFF....WEBP + VP8X chunk whose flags byte has the animation bit.
    return len(data) > 20 and data[:4] == b"RIFF" and data[8:16] == b"WEBPVP8X" and bool(data[20] & 0x02)


def _open_animation(data: bytes, shown: str) -> Image.Image:
    """Animated WebP through Pillow: FFmpeg's webp decoder rejects animations."""
    try:
        return Image.open(BytesIO(data))
    except Image.DecompressionBombError as exc:  # before the canvas is allocated
        raise MediaError("resolution_too_large", f"{shown}: animated WebP canvas is too large ({exc})") from exc
    except (OSError, ValueError) as exc:
        raise MediaError("corrupt_media", f"{shown}: animated WebP could not be read by Pillow ({exc})") from exc


def _pillow_frames(image: Image.Image, shown: str, stats: _Stats) -> Iterator[_Decoded]:
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
                yield _Decoded(t, duration, canvas, 0)
                t += duration
    except (OSError, EOFError, ValueError) as exc:
        raise MediaError("corrupt_media", f"{shown}: animated WebP frame could not be decoded ({exc})") from exc


class _OpenSegment:
    """Samples of the segment being built: the first frame at or after each grid point
    start + k / sample_fps.

    Until the segment holds `min_frames` samples, frames at the points of a finer grid (the
    interval over the next power of two >= min_frames) are kept as spares, so a segment too
    short for `min_frames` grid samples still gets them, spread over its length.
    """

    def __init__(self, index: int, start_s: float, policy: SegmentPolicy) -> None:
        self.index = index
        self.start_s = start_s
        self.interval = 1.0 / policy.sample_fps
        self.min_frames = policy.min_frames
        self.spare_interval = self.interval / (1 << (policy.min_frames - 1).bit_length())
        self.next_sample_s = start_s
        self.next_spare_s = start_s
        # Twice the final count is enough to thin uniformly without holding a long segment.
        self.capacity = 2 * policy.max_frames
        self.samples: list[tuple[float, Image.Image]] = []
        self.spares: list[tuple[float, Image.Image]] = []

    @property
    def short(self) -> bool:
        return len(self.samples) < self.min_frames

    @property
    def next_wanted_s(self) -> float:
        """Time of the next frame this segment would keep."""
        return min(self.next_sample_s, self.next_spare_s) if self.short else self.next_sample_s

    def wants(self, t: float) -> bool:
        return t >= self.next_wanted_s - _EPS

    def add(self, t: float, image: Image.Image) -> None:
        if t >= self.next_sample_s - _EPS:
            self.samples.append((t, image))
            if len(self.samples) > self.capacity:
                # Halve the density and keep the grid, so the kept samples stay evenly spaced.
                self.samples = self.samples[::2]
                self.interval *= 2
            steps = math.floor((t - self.start_s) / self.interval + _EPS) + 1
            self.next_sample_s = self.start_s + steps * self.interval
            if not self.short:
                self.spares.clear()
        else:
            self.spares.append((t, image))
            if len(self.spares) > self.capacity:
                self.spares = self.spares[::2]
        steps = math.floor((t - self.start_s) / self.spare_interval + _EPS) + 1
        self.next_spare_s = self.start_s + steps * self.spare_interval

    def close(
        self,
        end_s: float,
        reason: Literal["cut", "window", "end"],
        policy: SegmentPolicy,
        start_s: float | None = None,
    ) -> DecodedSegment:
        chosen = self.samples
        if self.short and self.spares:
            pool = sorted(self.samples + self.spares, key=lambda sample: sample[0])
            chosen = [pool[i] for i in uniform_indices(len(pool), self.min_frames)]
        chosen = [chosen[i] for i in uniform_indices(len(chosen), policy.max_frames)]
        encoded = encode_within_budget(chosen, policy.jpeg_quality, policy.max_segment_bytes)
        frames = tuple(SegmentFrame(i, _round_time(f.pts_s), f.width, f.height, f.jpeg) for i, f in enumerate(encoded))
        start = self.start_s if start_s is None else start_s
        return DecodedSegment(self.index, _round_time(start), _round_time(end_s), reason, frames)


def _round_time(t: float) -> float:
    # Microseconds: below any container's resolution, and hides float noise from extrapolated pts.
    return round(t, 6)


def _segments(
    frames: Iterable[_Decoded],
    policy: SegmentPolicy,
    info: MediaInfo,
    shown: str,
    stats: _Stats,
    feed: PacketFeed | None = None,
    budget: DecodeBudget | None = None,
) -> Iterator[DecodedSegment]:
    detector = CutDetector(policy.scene_threshold if policy.detects_cuts else 0.0)
    reformatter = VideoReformatter()
    sizes: dict[tuple[int, int, int], tuple[int, int]] = {}
    current: _OpenSegment | None = None
    last: _Decoded | None = None
    for item in frames:
        width, height = (item.frame.width, item.frame.height)
        _check_resolution(width, height, policy, shown)
        if budget is not None:
            budget.charge(width * height, item.t)
        if item.t > policy.max_duration_s:
            raise MediaError(
                "media_too_long",
                f"{shown}: decoding passed {policy.max_duration_s:.0f} s, the duration limit",
            )
        try:
            distance = detector.distance(item.frame)
        except ValueError as exc:  # av.error.ValueError: swscale has no path for this pixel format
            raise MediaError("unsupported_media", f"{shown}: cannot convert frame ({exc})") from exc
        if current is None:
            current = _OpenSegment(0, item.t, policy)
        else:
            elapsed = item.t - current.start_s
            reason: Literal["cut", "window"] | None = None
            if detector.is_cut(distance) and elapsed >= policy.min_scene_s - _EPS:
                reason = "cut"
            elif elapsed >= policy.max_segment_s - _EPS:
                reason = "window"
            if reason is not None:
                yield current.close(item.t, reason, policy)
                current = _OpenSegment(current.index + 1, item.t, policy)
        if current.wants(item.t):
            key = (width, height, item.rotation)
            if key not in sizes:
                sizes[key] = target_size(*display_size(width, height, item.rotation), policy.max_pixels)
            try:
                image = frame_to_image(item.frame, sizes[key], item.rotation, reformatter)
            except ValueError as exc:
                raise MediaError("unsupported_media", f"{shown}: cannot convert frame ({exc})") from exc
            current.add(item.t, image)
        last = item
        if feed is not None:
            # The first frame at or after either time is the next one that matters: a sample,
            # or the frame that opens the next window.
            feed.wanted_s = min(current.next_wanted_s, current.start_s + policy.max_segment_s)
    if current is None or last is None:
        detail = f"; {stats.decode_errors} packet(s) failed, first: {stats.first_error}" if stats.decode_errors else ""
        raise MediaError(
            "corrupt_media",
            f"{shown}: {info.codec} stream decoded to zero frames (no decodable picture{detail})",
        )
    if info.kind == "image" and stats.frames == 1:
        yield current.close(0.0, "end", policy, start_s=0.0)
        return
    end_s = last.t + last.duration
    if feed is not None and feed.mode != "dense":
        end_s = max(end_s, feed.end_s)  # the frames after the last wanted one were not decoded
    yield current.close(end_s, "end", policy)


def _counted(packets: Iterable[Packet], budget: DecodeBudget) -> Iterator[Packet]:
    """Every demuxed packet's bytes go into the budget, decoded or skipped."""
    for packet in packets:
        budget.add_bytes(packet.size)
        yield packet


def decode_segments(
    source: str | BinaryIO | RawIOBase,
    policy: SegmentPolicy,
    *,
    options: dict[str, str] | None = None,
    timeout_s: float = 20.0,
    on_info: Callable[[MediaInfo], None] | None = None,
    name: str = "",
) -> Generator[DecodedSegment, None, None]:
    """Yield the segments of `source` (local path, http(s) URL or binary file object, shown
    as `name`) as each one closes.

    Raises MediaError for input that can never be decoded, before decoding when the container
    or an image header already shows it (no video, too long, too large), and as soon as
    decoding exceeds the object's budget; `on_info` sees the declared properties before the
    first frame is decoded. Closing the generator early closes the container.
    """
    shown = redact(source) if isinstance(source, str) else name or "<stream>"
    started = time.perf_counter()
    stats = _Stats()
    segments = 0
    feed: PacketFeed | None = None
    container = open_media(
        source, options=options, timeout_s=timeout_s, max_pixels=policy.max_source_pixels, name=shown
    )
    try:
        stream = select_video_stream(container, shown)
        info = probe_media(container, stream)
        budget = DecodeBudget(
            base_pixels=_BASE_BUDGET_FRAMES * policy.max_source_pixels,
            pixel_rate=policy.max_decode_pixel_rate,
            pixels_per_byte=policy.max_pixels_per_byte,
            max_seconds=policy.max_decode_s,
            shown=shown,
        )
        packets: Iterable[Packet] = _counted(container.demux(stream), budget)
        frames: Iterable[_Decoded] | None = None
        if container.format.name.endswith("_pipe") or container.format.name == "gif":
            # Image demuxers hand the whole file over as one packet (GIF: the header with the
            # first frame): read the size the header declares before any decoder allocates
            # it (probing did not: max_pixels stopped it, so the stream may show 0x0).
            packets = iter(packets)
            first = next(packets, None)
            blob = bytes(first) if first is not None else b""
            if (size := declared_size(blob)) is not None:
                _check_resolution(*size, policy, shown)
                if not info.width or not info.height:
                    info = MediaInfo(info.kind, info.duration_s, size[0], size[1], info.codec, info.fps)
            if container.format.name == "webp_pipe" and _is_animated_webp(blob):
                animation = _open_animation(blob, shown)
                info = MediaInfo("video", 0.0, animation.width, animation.height, "webp", None)
                frames = _pillow_frames(animation, shown, stats)
            elif first is not None:
                packets = chain([first], packets)
        _check_limits(info, policy, shown)
        if on_info is not None:
            on_info(info)
        if frames is None:
            stream.thread_type = "AUTO"  # frame + slice threading; must be set before the first decode
            if policy.decode_threads:
                stream.codec_context.thread_count = policy.decode_threads
            # Decoders refuse (EINVAL) pictures over the limit instead of allocating them.
            stream.codec_context.options = {"max_pixels": str(policy.max_source_pixels)}
            feed = PacketFeed(packets, _feed_mode(policy, info.codec), _origin_s(container))
            if feed.mode == "keyframes":
                # The decoder drops non-key packets too (some demuxers flag more than IDR frames).
                stream.codec_context.skip_frame = "NONKEY"
            frames = _timed_frames(container, stream, feed, stats)
        for segment in _segments(frames, policy, info, shown, stats, feed, budget):
            segments += 1
            yield segment
    except av.error.InvalidDataError as exc:
        raise MediaError("corrupt_media", f"{shown}: demuxing failed ({exc.strerror})") from exc
    except av.error.ArgumentError as exc:
        # What a decoder answers for a picture over max_pixels whose size the container did
        # not declare (declared sizes were checked above).
        raise MediaError(
            "resolution_too_large",
            f"{shown}: the decoder refused a picture ({exc.strerror}); pictures over "
            f"{policy.max_source_pixels} pixels are refused",
        ) from exc
    finally:
        container.close()
        if stats.decode_errors or stats.dropped:
            log.warning(
                "media_decode_errors_skipped",
                source=shown,
                errors=stats.decode_errors,
                first_error=stats.first_error,
                dropped_frames=stats.dropped,
                frames=stats.frames,
            )
        log.debug(
            "media_decoded",
            source=shown,
            frames=stats.frames,
            packets_skipped=feed.skipped if feed is not None else 0,
            segments=segments,
            seconds=round(time.perf_counter() - started, 3),
        )
