"""Picture or video -> stream of segments of sampled JPEG frames (the blocking core of the decode stage).

One path for stills and videos: every decoded frame feeds a cheap cut detector; a segment closes
on a hard cut, when it reaches the window length, or at the end of the media. Only the frames
sampled for a segment are converted to RGB at the model's size and JPEG-encoded, and a segment
is yielded as soon as it closes, so memory stays bounded by one segment whatever the length.

This module wires the parts together: container.py opens and probes the media (limits,
redaction), timeline.py decodes it into timed frames (packets or Pillow animations), and
sampling.py cuts and samples the segments. Documents are not decoded here: dispatch.py decides
which objects are documents (documents.py) and hands the others here. A multi-page TIFF shows
itself only in the bytes an image demuxer reads, so the caller passes `image_pages`, which may
claim those bytes as pages before they are decoded as a picture.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from io import RawIOBase
from itertools import chain
from typing import BinaryIO, Final

import av
import av.error
import structlog
from av.container import InputContainer
from av.packet import Packet
from av.video.stream import VideoStream

from workers.decode.budget import DecodeBudget
from workers.decode.container import (
    MediaInfo,
    check_limits,
    check_resolution,
    open_media,
    probe_media,
    select_video_stream,
)
from workers.decode.declared import declared_size
from workers.decode.errors import MediaError
from workers.decode.packets import FeedMode, PacketFeed
from workers.decode.policy import SegmentPolicy
from workers.decode.sampling import DecodedSegment, sample_segments
from workers.decode.speech import DecodedSpeech, SpeechExtractor
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

# Every object may decode this many frames at the largest accepted size before the
# per-media-second and per-byte budgets apply: stills and short clips never hit them.
_BASE_BUDGET_FRAMES: Final = 4


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


def _routed(packets: Iterator[Packet], video: VideoStream, speech: SpeechExtractor, expected: int) -> Iterator[Packet]:
    """The video stream's packets of a two-stream demux; the audio ones go to `speech`.

    When the index tells how many packets the video stream has (`expected`, mp4), an empty
    packet after the last one flushes the video decoder and the video path ends, so its final
    segment does not wait for (and chunks do not pile up behind) audio muxed after the video.
    """
    seen = 0
    for packet in packets:
        if packet.stream_index != video.index:
            speech.push(packet if packet.size else None)
            continue
        yield packet
        seen += 1 if packet.size else 0
        if expected and seen >= expected:
            yield Packet()
            return


def _rest_of_audio(packets: Iterator[Packet], speech: SpeechExtractor) -> Iterator[DecodedSpeech]:
    """Demux what follows the video's last packet into `speech`, chunks as they come; then
    the end of the audio. A demux error here ends the audio only: the video is done."""
    try:
        for packet in packets:
            if packet.stream_index == speech.stream_index:
                speech.push(packet if packet.size else None)
                yield from speech.take()
    except av.error.FFmpegError as exc:
        log.warning("speech_demux_stopped", error=str(exc))
    speech.push(None)
    yield from speech.take()


# What an image demuxer's one packet (the whole file) holds when it is not one picture: the
# pages to yield instead of decoding it, or None for a picture. Called with the demuxer's name,
# the bytes, the policy and the shown name, once the declared size passed the limits.
ImagePages = Callable[[str, bytes, SegmentPolicy, str], Iterator[DecodedSegment] | None]


@dataclass(frozen=True)
class OpenedVideo:
    """A media object FFmpeg opened, its video stream chosen; video_segments closes it."""

    container: InputContainer
    stream: VideoStream
    shown: str  # the source as errors and logs name it
    opened_at: float  # perf_counter() before opening: the decode log's time includes the open


def open_video(
    source: str | BinaryIO | RawIOBase,
    policy: SegmentPolicy,
    *,
    options: dict[str, str] | None,
    timeout_s: float,
    shown: str,
) -> OpenedVideo:
    """`source` (local path, http(s) URL or binary file object) opened by FFmpeg; raises
    MediaError when FFmpeg finds no media with a video stream in it."""
    opened_at = time.perf_counter()
    container = open_media(
        source, options=options, timeout_s=timeout_s, max_pixels=policy.max_source_pixels, name=shown
    )
    try:
        return OpenedVideo(container, select_video_stream(container, shown), shown, opened_at)
    except BaseException:
        container.close()
        raise


def video_segments(
    video: OpenedVideo,
    policy: SegmentPolicy,
    *,
    on_info: Callable[[MediaInfo], None] | None,
    image_pages: ImagePages,
) -> Generator[DecodedSegment | DecodedSpeech, None, None]:
    """Yield the segments of the opened `video` as each one closes, and with `policy.speech`
    the speech chunks of its first audio stream (speech.py) between them: all of them before
    the final segment (reason "end"), which is always the last item.

    Raises MediaError for input that can never be decoded, before decoding when the container
    or an image header already shows it (too long, too large), and as soon as decoding
    exceeds the object's budget; `on_info` sees the declared properties before the first
    frame is decoded (not called when `image_pages` claimed the image). Closing the generator
    early closes the container.
    """
    container, stream, shown = video.container, video.stream, video.shown
    stats = DecodeStats()
    segments = 0
    feed: PacketFeed | None = None
    speech: SpeechExtractor | None = None
    try:
        info = probe_media(container, stream)
        budget = DecodeBudget(
            base_pixels=_BASE_BUDGET_FRAMES * policy.max_source_pixels,
            pixel_rate=policy.max_decode_pixel_rate,
            pixels_per_byte=policy.max_pixels_per_byte,
            max_seconds=policy.max_decode_s,
            shown=shown,
        )
        is_image = container.format.name.endswith("_pipe") or container.format.name == "gif"
        if policy.speech is not None and not is_image and container.streams.audio:
            audio = container.streams.audio[0]
            speech = SpeechExtractor(
                audio,
                policy.speech,
                origin_s=origin_s(container),
                max_duration_s=policy.max_duration_s,
                shown=shown,
            )
            demuxed = iter(container.demux(stream, audio))
            # Only the video's bytes count into its budget: audio decodes no pixels.
            expected = stream.frames if container.format.name.startswith("mov,") else 0
            packets: Iterable[Packet] = _counted(_routed(demuxed, stream, speech, expected), budget)
        else:
            packets = _counted(container.demux(stream), budget)
        frames: Iterable[TimedFrame] | None = None
        if is_image:
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
            if (pages := image_pages(container.format.name, blob, policy, shown)) is not None:
                for page in pages:
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
        held: DecodedSegment | None = None  # the final segment, while speech may follow
        for segment in sample_segments(frames, policy, info, shown, stats, feed, budget):
            if speech is not None:
                yield from speech.take()
                if segment.reason == "end":
                    held = segment
                    continue
            segments += 1
            yield segment
        if speech is not None:
            yield from _rest_of_audio(demuxed, speech)
            if held is not None:
                segments += 1
                yield held
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
        if speech is not None:
            speech.log_summary()
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
            seconds=round(time.perf_counter() - video.opened_at, 3),
        )
