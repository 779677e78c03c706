"""Which path decodes an object, the one place that tells them apart: a document's pages
(documents.py) or a picture's or video's segments (segmenter.py).

A PDF is recognised by its header, read before FFmpeg sees a local file or file object; a
presigned URL is read for its header only once FFmpeg found no media in it, so a video there
pays no extra request and a PDF pays FFmpeg's failed probe (document_source.py). A TIFF with
more than one page is a document too, but only the bytes an image demuxer reads show how many
pages it has, so the video path asks `_tiff_document` about them before decoding a picture.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from io import RawIOBase
from typing import BinaryIO

from workers.decode.allowlist import is_pdf
from workers.decode.container import MediaInfo, is_url, redact
from workers.decode.document_source import read_head
from workers.decode.documents import DecodedPage, pdf_pages, tiff_page_count, tiff_pages
from workers.decode.errors import MediaError
from workers.decode.policy import SegmentPolicy
from workers.decode.sampling import DecodedSegment
from workers.decode.segmenter import open_video, video_segments
from workers.decode.speech import DecodedSpeech


def decode_segments(
    source: str | BinaryIO | RawIOBase,
    policy: SegmentPolicy,
    *,
    options: dict[str, str] | None = None,
    timeout_s: float = 20.0,
    on_info: Callable[[MediaInfo], None] | None = None,
    name: str = "",
) -> Generator[DecodedSegment | DecodedSpeech, None, None]:
    """Yield the segments of `source` (local path, http(s) URL or binary file object, shown
    as `name`) as each one closes, and, when the policy asks for speech, the speech chunks of
    its audio track, every one before the last segment.

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
    try:
        video = open_video(source, policy, options=options, timeout_s=timeout_s, shown=shown)
    except MediaError:
        if not remote or not is_pdf(read_head(source, timeout_s)):
            raise
        yield from pdf_pages(source, policy, shown=shown, timeout_s=timeout_s)
        return
    yield from video_segments(video, policy, on_info=on_info, image_pages=_tiff_document)


def _tiff_document(demuxer: str, image: bytes, policy: SegmentPolicy, shown: str) -> Iterator[DecodedPage] | None:
    """The pages of a TIFF with more than one page; None for any other image (one page is a picture)."""
    if demuxer == "tiff_pipe" and tiff_page_count(image) > 1:
        return tiff_pages(image, policy, shown=shown)
    return None
