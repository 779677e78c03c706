"""Which events the decode worker acts on: bucket allow-list, key prefix/suffix, content type
and declared size. A filtered event is a decision, not an error: it is counted and logged,
never dead-lettered."""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from schemas.events import ObjectCreated
from workers.settings import DecodeSettings, comma_list


@dataclass(frozen=True)
class EventFilter:
    buckets: frozenset[str] = frozenset()
    key_prefixes: tuple[str, ...] = ()
    key_suffixes: tuple[str, ...] = ()  # lower case
    content_types: tuple[str, ...] = ()  # lower case glob patterns, e.g. video/*
    max_bytes: int | None = None

    @classmethod
    def from_settings(cls, settings: DecodeSettings) -> EventFilter:
        return cls(
            buckets=frozenset(comma_list(settings.filter_buckets)),
            key_prefixes=comma_list(settings.filter_key_prefixes),
            key_suffixes=tuple(s.lower() for s in comma_list(settings.filter_key_suffixes)),
            content_types=tuple(s.lower() for s in comma_list(settings.filter_content_types)),
            max_bytes=settings.max_object_bytes,
        )

    def rejects(self, obj: ObjectCreated) -> str | None:
        """The filter that drops ``obj`` (a stable code for counters), or None to process it.

        Bucket and key filters apply to S3 objects only; file:// and http(s) sources are
        governed by CAPSTREAM_ALLOWED_SCHEMES.
        """
        if obj.bucket is not None and obj.key is not None:
            if self.buckets and obj.bucket not in self.buckets:
                return "bucket"
            if self.key_prefixes and not obj.key.startswith(self.key_prefixes):
                return "key_prefix"
            if self.key_suffixes and not obj.key.lower().endswith(self.key_suffixes):
                return "key_suffix"
        if self.content_types and obj.content_type:
            # Events that do not carry a content type (AWS S3 records) pass: use suffixes for those.
            mime = obj.content_type.split(";", 1)[0].strip().lower()
            if not any(fnmatchcase(mime, pattern) for pattern in self.content_types):
                return "content_type"
        # Declared sizes only; the decoder re-checks the real size (HEAD) before reading.
        if self.max_bytes is not None and obj.size is not None and obj.size > self.max_bytes:
            return "object_too_large"
        return None
