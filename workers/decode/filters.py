"""Which events the decode worker acts on: bucket allow-list, key prefix/suffix, content type
and membership of a configured collection (workers/access/collections.py).

A filtered event is a decision, not an error: it is counted, logged and shown as `skipped` in
progress (with the filter that declined it), never dead-lettered. A declared size over
CAPSTREAM_MAX_OBJECT_BYTES is different: that object was meant to be processed and cannot be,
so the stage dead-letters it (`object_too_large`) like an oversized object found by HEAD.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from schemas.events import ObjectCreated
from workers.access.collections import Collections
from workers.settings import DecodeSettings, comma_list


@dataclass(frozen=True)
class EventFilter:
    buckets: frozenset[str] = frozenset()
    key_prefixes: tuple[str, ...] = ()
    key_suffixes: tuple[str, ...] = ()  # lower case
    content_types: tuple[str, ...] = ()  # lower case glob patterns, e.g. video/*
    max_bytes: int | None = None
    settings_text: dict[str, str] | None = None  # filter code -> its configured value, for messages
    collections: Collections | None = None  # configured collections: an object in none is skipped

    @classmethod
    def from_settings(cls, settings: DecodeSettings) -> EventFilter:
        rules = settings.collection_rules()
        return cls(
            buckets=frozenset(comma_list(settings.filter_buckets)),
            key_prefixes=comma_list(settings.filter_key_prefixes),
            key_suffixes=tuple(s.lower() for s in comma_list(settings.filter_key_suffixes)),
            content_types=tuple(s.lower() for s in comma_list(settings.filter_content_types)),
            max_bytes=settings.max_object_bytes,
            collections=rules if rules.configured else None,
            settings_text={
                "collection": f"in no collection of {rules.describe()}",
                "bucket": f"CAPSTREAM_FILTER_BUCKETS={settings.filter_buckets}",
                "key_prefix": f"CAPSTREAM_FILTER_KEY_PREFIXES={settings.filter_key_prefixes}",
                "key_suffix": f"CAPSTREAM_FILTER_KEY_SUFFIXES={settings.filter_key_suffixes}",
                "content_type": f"CAPSTREAM_FILTER_CONTENT_TYPES={settings.filter_content_types}",
            },
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
        if self.collections is not None and self.collections.of(obj.bucket, obj.key) is None:
            return "collection"
        if self.content_types and obj.content_type:
            # Events that do not carry a content type (AWS S3 records) pass: use suffixes for those.
            mime = obj.content_type.split(";", 1)[0].strip().lower()
            if not any(fnmatchcase(mime, pattern) for pattern in self.content_types):
                return "content_type"
        return None

    def explain(self, code: str) -> str:
        """What a user reads in `capstream status` for an object declined by filter `code`."""
        configured = (self.settings_text or {}).get(code)
        return f"filtered: {code}" + (f" ({configured})" if configured else "")

    def too_large(self, obj: ObjectCreated) -> str | None:
        """Why the declared size is over the cap, or None. The decoder re-checks the real size
        (HEAD, or the bytes read) before reading."""
        if self.max_bytes is not None and obj.size is not None and obj.size > self.max_bytes:
            return f"{obj.uri} declares {obj.size} bytes, over CAPSTREAM_MAX_OBJECT_BYTES={self.max_bytes}"
        return None
