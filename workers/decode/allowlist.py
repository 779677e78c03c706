"""Which FFmpeg demuxers and protocols may touch untrusted media, and the options that say so.

An uploaded object is one self-contained file. Demuxers that open other resources (HLS/DASH
playlists, concat lists, image2 file sequences, mov external data references) would make
the worker fetch URLs or read local files an uploader names, so only containers and image
formats that read nothing but their own bytes are allowed. FFmpeg checks the allow-list
right after probing, before the demuxer reads its header: a refused format opens nothing.

PDFs never reach FFmpeg: they are recognised by their header here and rendered by PDFium
(documents.py), which has no network access and draws only what the document embeds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

# Component names of FFmpeg demuxers (av_match_list matches "mp4" in "mov,mp4,m4a,...").
# Audio-only containers are here so an audio file gets the clear "no video stream" error.
_VIDEO_CONTAINERS: Final = (
    "mov,mp4,matroska,webm,avi,mpegts,mpeg,flv,asf,nut,ogg,ivf,yuv4mpegpipe,h264,hevc,m4v,mpegvideo,obu"
)
_IMAGES: Final = "gif,apng,png_pipe,jpeg_pipe,webp_pipe,bmp_pipe,tiff_pipe"
_AUDIO: Final = "mp3,aac,wav,flac"
FORMAT_WHITELIST: Final = f"{_VIDEO_CONTAINERS},{_IMAGES},{_AUDIO}"

URL_PROTOCOLS: Final = "http,https,tcp,tls"
FILE_PROTOCOLS: Final = "file"
# Sources read through a Python file object need no FFmpeg protocol at all; a name that
# matches none refuses every nested open.
NO_PROTOCOLS: Final = "none"

_JPEG_MAGIC: Final = b"\xff\xd8\xff"
# PDF 32000-1 puts "%PDF-" first; PDFium, like most readers, accepts it anywhere in the
# first 1024 bytes (files with junk before the header exist).
_PDF_MAGIC: Final = b"%PDF-"
DOCUMENT_HEAD_BYTES: Final = 1024


def open_options(protocols: str, max_pixels: int) -> dict[str, str]:
    """av.open options for untrusted media.

    `max_pixels` reaches the decoders avformat_find_stream_info opens while probing (a PNG
    is decoded there to learn its size), so a bomb is refused before it is allocated.
    """
    return {
        "protocol_whitelist": protocols,
        "format_whitelist": FORMAT_WHITELIST,
        "enable_drefs": "0",  # mov: never follow external data references (FFmpeg's default)
        "max_pixels": str(max_pixels),
    }


def forced_format(path: str) -> str | None:
    """Demuxer to use for a local file whose name would mislead FFmpeg's probe.

    FFmpeg prefers image2 (file sequences, refused) for a `.jpg` name over jpeg_pipe, which
    probes by content; a JPEG is opened as jpeg_pipe whatever its name.
    """
    try:
        with Path(path).open("rb") as handle:
            head = handle.read(len(_JPEG_MAGIC))
    except OSError:
        return None  # FFmpeg reports the missing file itself
    return "jpeg_pipe" if head == _JPEG_MAGIC else None


def is_pdf(head: bytes) -> bool:
    """Whether `head` (the first DOCUMENT_HEAD_BYTES of an object) is a PDF's."""
    return _PDF_MAGIC in head[:DOCUMENT_HEAD_BYTES]
