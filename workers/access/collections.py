"""Collections: named sets of sources (a bucket, optionally a key prefix) that API keys are
scoped to.

Every indexed row carries the collection its object belongs to, and search filters on it
inside the store before ranking, so a key's hits, objects, thumbnails and links come only from
its collections. With nothing configured there is one collection, ``default``, holding every
source; once collections are configured, an object in none of them is skipped by decode with
the reason ``collection``, as the event filters skip.

Configured by ``CAPSTREAM_COLLECTIONS`` (``news=media/news/,archive;talks=talks``: a name, then
sources ``bucket[/prefix]``; ``*`` is every source) or ``CAPSTREAM_COLLECTIONS_FILE``, a TOML
file::

    [collections.news]
    sources = ["media/news/", "archive"]

An object belongs to the collection of its longest matching source (a more specific rule
wins; equal lengths go to the first listed), so one object is never in two collections. The
index column is written when a row is indexed: after changing the rules, ``capstream reindex``
re-files the rows already indexed.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints, field_validator

CollectionName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
DEFAULT_COLLECTION = "default"
UNFILED = ""  # the collection column of a row whose object is in none: no key sees it
EVERY_SOURCE = "*"


def s3_parts(source_uri: str) -> tuple[str | None, str | None]:
    """``(bucket, key)`` of an ``s3://`` URI; ``(None, None)`` for any other source."""
    if not source_uri.startswith("s3://"):
        return None, None
    bucket, _, key = source_uri.removeprefix("s3://").partition("/")
    return bucket, key


class Source(BaseModel):
    """``bucket[/prefix]``, or ``*`` for every source (S3 or not)."""

    bucket: str
    prefix: str = ""

    @classmethod
    def parse(cls, text: str) -> Source:
        text = text.strip()
        if text == EVERY_SOURCE:
            return cls(bucket=EVERY_SOURCE)
        bucket, _, prefix = text.partition("/")
        if not bucket:
            raise ValueError(f"source {text!r} has no bucket")
        return cls(bucket=bucket, prefix=prefix)

    def matches(self, bucket: str | None, key: str | None) -> bool:
        if self.bucket == EVERY_SOURCE:
            return True
        return bucket == self.bucket and key is not None and key.startswith(self.prefix)

    @property
    def specificity(self) -> int:
        return -1 if self.bucket == EVERY_SOURCE else len(self.bucket) + 1 + len(self.prefix)

    def __str__(self) -> str:
        return EVERY_SOURCE if self.bucket == EVERY_SOURCE else f"{self.bucket}/{self.prefix}"


class Collection(BaseModel):
    name: CollectionName
    sources: list[Source] = Field(min_length=1)


class Collections(BaseModel):
    collections: list[Collection]
    configured: bool = True  # False: the implicit `default` collection of every source

    @field_validator("collections")
    @classmethod
    def _unique_names(cls, value: list[Collection]) -> list[Collection]:
        names = [c.name for c in value]
        if len(set(names)) != len(names):
            raise ValueError(f"collection names repeat: {names}")
        return value

    @classmethod
    def everything(cls) -> Collections:
        return cls(
            collections=[Collection(name=DEFAULT_COLLECTION, sources=[Source(bucket=EVERY_SOURCE)])], configured=False
        )

    @classmethod
    def parse(cls, text: str) -> Collections:
        """``name=bucket[/prefix],...;name2=...`` (the environment variable's form)."""
        collections = []
        for part in filter(None, (p.strip() for p in text.split(";"))):
            name, sep, sources = part.partition("=")
            if not sep:
                raise ValueError(f"collection {part!r} is not name=source,source")
            collections.append(
                Collection(name=name.strip(), sources=[Source.parse(s) for s in sources.split(",") if s.strip()])
            )
        return cls(collections=collections)

    @classmethod
    def from_toml(cls, path: str | Path) -> Collections:
        data = tomllib.loads(Path(path).read_text())
        table = data.get("collections", {})
        return cls(
            collections=[
                Collection(name=name, sources=[Source.parse(s) for s in body.get("sources", [])])
                for name, body in table.items()
            ]
        )

    @classmethod
    def load(cls, env_value: str, file: str) -> Collections:
        """The configured collections (the file wins over the variable), or ``everything()``."""
        if file:
            return cls.from_toml(file)
        if env_value.strip():
            return cls.parse(env_value)
        return cls.everything()

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.collections]

    def of_uri(self, source_uri: str) -> str | None:
        """``of`` an object named by its source URI (``s3://bucket/key``; other schemes have no
        bucket, so only ``*`` takes them)."""
        return self.of(*s3_parts(source_uri))

    def of(self, bucket: str | None, key: str | None) -> str | None:
        """The collection an object belongs to, or None when it is in none."""
        best: tuple[int, str] | None = None
        for collection in self.collections:
            for source in collection.sources:
                if source.matches(bucket, key) and (best is None or source.specificity > best[0]):
                    best = (source.specificity, collection.name)
        return None if best is None else best[1]

    def describe(self) -> str:
        """The rules, as the environment variable writes them (for messages)."""
        return ";".join(f"{c.name}={','.join(str(s) for s in c.sources)}" for c in self.collections)
