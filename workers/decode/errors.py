"""The one error the decode core raises for input that can never be decoded."""

from __future__ import annotations

from typing import Final, Literal, get_args

MediaErrorReason = Literal[
    "corrupt_media",
    "no_video_stream",
    "unsupported_media",
    "media_too_long",
    "resolution_too_large",
    "decode_budget_exceeded",
    "encrypted_document",
    "too_many_pages",
]
MEDIA_ERROR_REASONS: Final[tuple[str, ...]] = get_args(MediaErrorReason)


class MediaError(Exception):
    """Input media that can never be decoded; `reason` is a stable machine-readable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(reason, message)  # both in args, so the error pickles across processes
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        return self.message
