"""A small segments table for the search tests, written with LanceDB directly (row_schema),
with all-MiniLM-L6-v2 vectors from sentence-transformers (the same model the offline embed
stage serves with vLLM; cosine 1.000000 between the two)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import lancedb
import pyarrow as pa
from PIL import Image

from schemas.summary import Chapter, ObjectSummary
from workers.access.collections import UNFILED, Collections
from workers.decode.thumbnail import make_thumbnail
from workers.index.objects import ObjectsTable
from workers.index.table import row_schema
from workers.models.offline import minilm_model_dir
from workers.settings import IndexSettings

TABLE = "segments"
DIM = 384


@dataclass(frozen=True)
class Doc:
    bucket: str
    key: str
    index: int
    caption: str
    colour: tuple[int, int, int] = (200, 80, 40)
    modality: str = "visual"  # a speech row is numbered apart: its index is the chunk's
    language: str | None = None
    page_number: int | None = None  # a document page (its times are 0, as the decoder writes them)

    @property
    def object_id(self) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"s3://{self.bucket}/{self.key}"))

    @property
    def segment_id(self) -> str:
        kind = "speech:" if self.modality == "speech" else ""
        return str(uuid.uuid5(uuid.UUID(self.object_id), f"{kind}{self.index}"))

    @property
    def start_s(self) -> float:
        return 0.0 if self.page_number else 5.0 * self.index

    @property
    def end_s(self) -> float:
        return 0.0 if self.page_number else 5.0 * self.index + 5.0


# One long video (many segments about cooking), and short ones on distinct topics.
LONG = [
    Doc("media", "long/kitchen.mp4", i, f"A chef chops onions and stirs a pot of soup in a kitchen, part {i}.")
    for i in range(8)
]
DOCS = [
    *LONG,
    Doc("media", "clips/cat.mp4", 0, "A small grey kitten plays with a ball of yarn on a sofa.", (90, 90, 90)),
    Doc("media", "clips/cat.mp4", 1, "The kitten falls asleep on a blanket.", (120, 120, 160)),
    Doc("media", "clips/harbour.mp4", 0, "A red sailing boat leaves the harbour at sunset.", (220, 60, 30)),
    Doc("archive", "clips/snow.mp4", 0, "Skiers race down a snowy mountain slope.", (240, 240, 250)),
    Doc("archive", "other/stock.mp4", 0, "Traders watch stock market charts on many screens.", (20, 120, 40)),
    Doc("media", "clips/cooking-short.mp4", 0, "A cook fries eggs in a pan in a small kitchen.", (250, 200, 50)),
    Doc(
        "media",
        "clips/annual-report.pdf",
        2,
        "Annual report, revenue table: revenue grew to 41 million euros in 2025.",
        (255, 255, 255),
        modality="page",
        page_number=3,
    ),
]


@cache
def _model() -> Any:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm_model_dir()), device="cpu")


def embed(texts: list[str]) -> list[list[float]]:
    vectors = _model().encode(texts, normalize_embeddings=True)
    return [list(map(float, v)) for v in vectors]


# The collections the rows are filed under (as the index worker files them), for scoped keys.
COLLECTIONS_ENV = "kitchen=media/long/;clips=media/clips/;archive=archive"
COLLECTIONS = Collections.parse(COLLECTIONS_ENV)


def thumbnail(colour: tuple[int, int, int]) -> bytes:
    return make_thumbnail(Image.new("RGB", (320, 180), colour))


def rows(docs: list[Doc]) -> list[dict[str, Any]]:
    vectors = embed([d.caption for d in docs])
    now = datetime.now(UTC)
    return [
        {
            "segment_id": d.segment_id,
            "embedding_id": str(uuid.uuid5(uuid.UUID(d.segment_id), "minilm")),
            "object_id": d.object_id,
            "segment_index": d.index,
            "uri": f"s3://{d.bucket}/{d.key}",
            "bucket": d.bucket,
            "key": d.key,
            "version": None,
            "start_s": d.start_s,
            "end_s": d.end_s,
            "caption": d.caption,
            "caption_model": "capstream/test-captions",
            "modality": d.modality,
            "language": d.language,
            "page_number": d.page_number,
            "collection": COLLECTIONS.of(d.bucket, d.key) or UNFILED,
            "embedding_model": "sentence-transformers/all-MiniLM-L6-v2",
            "vector": v,
            "thumbnail": thumbnail(d.colour),
            "indexed_at": now,
        }
        for d, v in zip(docs, vectors, strict=True)
    ]


SUMMARIZED_KEY = "clips/cat.mp4"  # the one object with a summary in the objects table


def summary_of(docs: list[Doc]) -> ObjectSummary:
    """A summary as the summarize stage writes one: a chapter per moment of the object."""
    first = docs[0]
    return ObjectSummary(
        object_id=first.object_id,
        uri=f"s3://{first.bucket}/{first.key}",
        bucket=first.bucket,
        key=first.key,
        collection=COLLECTIONS.of(first.bucket, first.key) or UNFILED,
        duration_s=max(d.end_s for d in docs),
        summary="A kitten plays with yarn, then naps.",
        chapters=[Chapter(title=d.caption[:40], start_s=d.start_s, end_s=d.end_s) for d in docs],
        moments=len(docs),
        passes=1,
        model="capstream/test-summaries",
        summarized_at=datetime.now(UTC),
    )


def build_table(index_dir: Path, docs: list[Doc] = DOCS, text_index: bool = True) -> Any:
    db = lancedb.connect(str(index_dir))
    table = db.create_table(TABLE, data=pa.Table.from_pylist(rows(docs), schema=row_schema(DIM)), mode="overwrite")
    if text_index:
        table.create_fts_index("caption")
    summarized = sorted((d for d in docs if d.key == SUMMARIZED_KEY), key=lambda d: d.index)
    if summarized:
        settings = IndexSettings(index_uri=str(index_dir), index_table=TABLE)
        ObjectsTable(db, settings).upsert(summary_of(summarized))
    return table
