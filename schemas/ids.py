"""Deterministic ids: a replayed record must produce byte-identical ids downstream."""

from __future__ import annotations

import uuid

# Fixed namespace so every deployment derives the same ids from the same inputs.
CAPSTREAM_NAMESPACE = uuid.UUID("6f1c1c64-5d0e-5a57-9a43-6b7e5b1f0c2a")


def object_version_id(uri: str, version_token: str | None) -> str:
    """Id of one version of one object: a re-delivered event maps to the same id,
    an overwrite (new versionId / eTag / sequencer) to a new one."""
    return str(uuid.uuid5(CAPSTREAM_NAMESPACE, f"{uri}#{version_token or ''}"))


def segment_id(object_id: str, segment_index: int) -> str:
    return str(uuid.uuid5(uuid.UUID(object_id), f"segment:{segment_index}"))


def embedding_id(segment_id: str, model: str) -> str:
    return str(uuid.uuid5(uuid.UUID(segment_id), f"embedding:{model}"))


def speech_segment_id(object_id: str, chunk_index: int) -> str:
    """Id of an object's `chunk_index`-th speech chunk: never equal to a visual segment's id."""
    return str(uuid.uuid5(uuid.UUID(object_id), f"speech:{chunk_index}"))
