"""Exported JSON Schema files for producers and consumers outside Python.

``python -m schemas.export`` rewrites ``schemas/json/``; a unit test fails when they are stale.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import BaseModel

from schemas.captions import Caption
from schemas.dead_letter import DeadLetter
from schemas.embeddings import Embedding
from schemas.events import ObjectCreated
from schemas.outcome import ObjectOutcome, WebhookPayload
from schemas.progress import ObjectProgress
from schemas.segments import SegmentBatch
from schemas.speech import SpeechChunk, Transcript

JSON_DIR = Path(__file__).parent / "json"

EXPORTED: dict[str, type[BaseModel]] = {
    "object-created": ObjectCreated,
    "segment-batch": SegmentBatch,
    "caption": Caption,
    "speech-chunk": SpeechChunk,
    "transcript": Transcript,
    "embedding": Embedding,
    "dead-letter": DeadLetter,
    "object-progress": ObjectProgress,
    "object-outcome": ObjectOutcome,
    "webhook-payload": WebhookPayload,
}


def render_schemas() -> dict[str, str]:
    """File name -> pretty JSON Schema text."""
    return {
        f"{name}.schema.json": json.dumps(model.model_json_schema(), indent=2, sort_keys=True) + "\n"
        for name, model in EXPORTED.items()
    }


def main() -> int:
    JSON_DIR.mkdir(exist_ok=True)
    for filename, text in render_schemas().items():
        (JSON_DIR / filename).write_text(text)
    sys.stderr.write(f"wrote {len(EXPORTED)} schemas to {JSON_DIR}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
