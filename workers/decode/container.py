"""Opening untrusted media for demuxing, reading what its container declares, and refusing it early.

Everything the decode core knows before the first frame is decoded comes from here: the
container is opened with only the demuxers and protocols of allowlist.py, FFmpeg's open
errors become MediaError (or keep their class with the URL redacted), the first real video
stream is chosen, and its declared duration and size are checked against the policy's limits.
Presigned URLs carry credentials in their query string, so every name shown in an error or a
log goes through `redact` first.
"""

from __future__ import annotations

from dataclasses import dataclass
from io import RawIOBase
from typing import BinaryIO, Final, Literal
from urllib.parse import urlsplit, urlunsplit

import av
import av.error
from av.container import InputContainer
from av.stream import Disposition
from av.video.stream import VideoStream

from workers.decode.allowlist import FILE_PROTOCOLS, NO_PROTOCOLS, URL_PROTOCOLS, forced_format, open_options
from workers.decode.errors import MediaError
from workers.decode.policy import SegmentPolicy

# Range-request streaming for presigned URLs. FFmpeg's http protocol otherwise asks for an
# open-ended range (`bytes=N-`), so the server sends the rest of the object, and every seek
# (an mp4 whose index sits at the end) drops that connection and opens another open-ended
# one: it reads the whole object, sometimes more than once. Bounded ranges instead: the first
# request (probing) is 64 KiB, each later one 256 KiB, over one kept-alive connection.
URL_OPTIONS: Final[dict[str, str]] = {
    "request_size": "262144",
    "initial_request_size": "65536",
    "multiple_requests": "1",
}
_IMAGE_FORMATS: Final = frozenset({"image2", "image2pipe"})


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


def is_url(source: str) -> bool:
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
        remote = is_url(source)
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


def check_limits(info: MediaInfo, policy: SegmentPolicy, shown: str) -> None:
    """Refuse media whose declared duration or size is over the policy's limits."""
    if info.duration_s > policy.max_duration_s:
        raise MediaError(
            "media_too_long",
            f"{shown}: declared duration {info.duration_s:.1f} s exceeds the limit of {policy.max_duration_s:.0f} s",
        )
    check_resolution(info.width, info.height, policy, shown)


def check_resolution(width: int, height: int, policy: SegmentPolicy, shown: str) -> None:
    """Refuse a picture (declared or decoded) over `policy.max_source_pixels`."""
    if width * height > policy.max_source_pixels:
        raise MediaError(
            "resolution_too_large",
            f"{shown}: {width}x{height} exceeds the limit of {policy.max_source_pixels} pixels",
        )
