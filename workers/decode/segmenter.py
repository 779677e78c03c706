"""Media object -> stream of segments of sampled JPEG frames (the blocking core of the decode stage).

One path for stills and videos: every decoded frame feeds a cheap cut detector; a segment closes
on a hard cut, when it reaches the window length, or at the end of the media. Only the frames
sampled for a segment are converted to RGB at the model's size and JPEG-encoded, and a segment
is yielded as soon as it closes, so memory stays bounded by one segment whatever the length.

This module holds the policy and the top-level generator that wires the parts together:
container.py opens and probes the media (limits, redaction), timeline.py decodes it into
timed frames (packets or Pillow animations), and sampling.py cuts and samples the segments.
Documents take another path: a PDF (recognised by its header) or a TIFF with more than one
page becomes one segment per page (documents.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from io import RawIOBase
from itertools import chain
from typing import BinaryIO, Final, Literal, get_args

import av
import av.error
import structlog
from av.container import InputContainer
from av.packet import Packet
from av.video.stream import VideoStream

from workers.decode.allowlist import is_pdf
from workers.decode.budget import DecodeBudget
from workers.decode.container import MediaInfo as MediaInfo
from workers.decode.container import (
    check_limits,
    check_resolution,
    is_url,
    open_media,
    probe_media,
    redact,
    select_video_stream,
)
from workers.decode.declared import declared_size
from workers.decode.document_source import read_head
from workers.decode.documents import DecodedPage as DecodedPage
from workers.decode.documents import pdf_pages, tiff_page_count, tiff_pages
from workers.decode.errors import MEDIA_ERROR_REASONS as MEDIA_ERROR_REASONS
from workers.decode.errors import MediaError as MediaError
from workers.decode.errors import MediaErrorReason as MediaErrorReason
from workers.decode.packets import FeedMode, PacketFeed
from workers.decode.sampling import DecodedSegment as DecodedSegment
from workers.decode.sampling import SegmentFrame as SegmentFrame
from workers.decode.sampling import sample_segments
from workers.decode.timeline import (
    DecodeStats,
    TimedFrame,
    is_animated_webp,
    open_animation,
    origin_s,
    pillow_frames,
    timed_frames,
)

log = structlog.get_logger(__name__)

SegmentMode = Literal["scene", "fixed", "keyframe"]
SEGMENT_MODES: Final[tuple[str, ...]] = get_args(SegmentMode)

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
    page_max_pixels: int = 1920 * 1080  # per document page, rendered or decoded (see documents.py)
    max_pages: int = 1000  # documents with more pages are refused
    # Visual tokens a segment's frames may cost Qwen3-VL as one video; 0 = no budget
    # (sampling.py: segment_window_s, frame_pixels).
    visual_token_budget: int = 0

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
                ("page_max_pixels", self.page_max_pixels >= 32 * 32),
                ("max_pages", self.max_pages >= 1),
                ("visual_token_budget", self.visual_token_budget >= 0),
            )
            if not ok
        ]
        if problems:
            raise ValueError(f"invalid SegmentPolicy field(s): {', '.join(problems)} ({self!r})")


def _feed_mode(policy: SegmentPolicy, codec: str) -> FeedMode:
    # A GIF has one keyframe (later frames patch the canvas); animations are short anyway.
    if policy.mode == "keyframe" and codec != "gif":
        return "keyframes"
    return "dense" if policy.detects_cuts else "sparse"


def _counted(packets: Iterable[Packet], budget: DecodeBudget) -> Iterator[Packet]:
    """Every demuxed packet's bytes go into the budget, decoded or skipped."""
    for packet in packets:
        budget.add_bytes(packet.size)
        yield packet


def _open_video(
    source: str | BinaryIO | RawIOBase,
    policy: SegmentPolicy,
    options: dict[str, str] | None,
    timeout_s: float,
    shown: str,
) -> tuple[InputContainer, VideoStream]:
    container = open_media(
        source, options=options, timeout_s=timeout_s, max_pixels=policy.max_source_pixels, name=shown
    )
    try:
        return container, select_video_stream(container, shown)
    except BaseException:
        container.close()
        raise


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
    first frame is decoded (not called for documents, whose segments are DecodedPage).
    Closing the generator early closes the container.
    """
    shown = redact(source) if isinstance(source, str) else name or "<stream>"
    remote = isinstance(source, str) and is_url(source)
    if not remote and is_pdf(read_head(source, timeout_s)):
        yield from pdf_pages(source, policy, shown=shown, timeout_s=timeout_s)
        return
    started = time.perf_counter()
    stats = DecodeStats()
    segments = 0
    feed: PacketFeed | None = None
    try:
        container, stream = _open_video(source, policy, options, timeout_s, shown)
    except MediaError:
        # A URL is read for its header only once FFmpeg found no media in it: video pays no
        # extra request, a PDF pays FFmpeg's failed probe (document_source.py).
        if not remote or not is_pdf(read_head(source, timeout_s)):
            raise
        yield from pdf_pages(source, policy, shown=shown, timeout_s=timeout_s)
        return
    try:
        info = probe_media(container, stream)
        budget = DecodeBudget(
            base_pixels=_BASE_BUDGET_FRAMES * policy.max_source_pixels,
            pixel_rate=policy.max_decode_pixel_rate,
            pixels_per_byte=policy.max_pixels_per_byte,
            max_seconds=policy.max_decode_s,
            shown=shown,
        )
        packets: Iterable[Packet] = _counted(container.demux(stream), budget)
        frames: Iterable[TimedFrame] | None = None
        if container.format.name.endswith("_pipe") or container.format.name == "gif":
            # Image demuxers hand the whole file over as one packet (GIF: the header with the
            # first frame): read the size the header declares before any decoder allocates
            # it (probing did not: max_pixels stopped it, so the stream may show 0x0).
            packets = iter(packets)
            first = next(packets, None)
            blob = bytes(first) if first is not None else b""
            if (size := declared_size(blob)) is not None:
                check_resolution(*size, policy, shown)
                if not info.width or not info.height:
                    info = MediaInfo(info.kind, info.duration_s, size[0], size[1], info.codec, info.fps)
            if container.format.name == "tiff_pipe" and tiff_page_count(blob) > 1:
                for page in tiff_pages(blob, policy, shown=shown):
                    segments += 1
                    yield page
                return
            if container.format.name == "webp_pipe" and is_animated_webp(blob):
                animation = open_animation(blob, shown)
                info = MediaInfo("video", 0.0, animation.width, animation.height, "webp", None)
                frames = pillow_frames(animation, shown, stats)
            elif first is not None:
                packets = chain([first], packets)
        check_limits(info, policy, shown)
        if on_info is not None:
            on_info(info)
        if frames is None:
            stream.thread_type = "AUTO"  # frame + slice threading; must be set before the first decode
            if policy.decode_threads:
                stream.codec_context.thread_count = policy.decode_threads
            # Decoders refuse (EINVAL) pictures over the limit instead of allocating them.
            stream.codec_context.options = {"max_pixels": str(policy.max_source_pixels)}
            feed = PacketFeed(packets, _feed_mode(policy, info.codec), origin_s(container))
            if feed.mode == "keyframes":
                # The decoder drops non-key packets too (some demuxers flag more than IDR frames).
                stream.codec_context.skip_frame = "NONKEY"
            frames = timed_frames(container, stream, feed, stats)
        for segment in sample_segments(frames, policy, info, shown, stats, feed, budget):
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
