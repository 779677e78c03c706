"""The client's models against the server's OpenAPI document, built from the app in process
(no server started, no searcher called), and the client importing nothing of the server."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from workers.client.schema_check import schema_drift

ROOT = Path(__file__).resolve().parents[2]
SERVER_ONLY = ("workers.search", "lancedb", "vllm", "torch", "redis", "fastapi")


class _NeverCalled:
    """The searcher create_app wants: building the OpenAPI document never touches it."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the searcher was used: {name}")


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    from workers.search.api import create_app
    from workers.settings import SearchSettings

    return create_app(SearchSettings(), searcher=_NeverCalled()).openapi()  # type: ignore[arg-type]


def test_the_client_models_match_the_servers_schemas(openapi: dict[str, Any]) -> None:
    assert schema_drift(openapi) == []


def _schemas(spec: dict[str, Any]) -> dict[str, Any]:
    schemas: dict[str, Any] = spec["components"]["schemas"]
    return schemas


def test_a_field_the_client_declares_that_the_server_dropped_is_drift(openapi: dict[str, Any]) -> None:
    spec = copy.deepcopy(openapi)
    hit = _schemas(spec)["Hit"]
    del hit["properties"]["thumbnail_url"]
    hit["required"].remove("thumbnail_url")
    assert schema_drift(spec) == ["Hit.thumbnail_url: declared by the client, not in the server's schema"]


def test_a_renamed_field_is_drift_both_ways(openapi: dict[str, Any]) -> None:
    spec = copy.deepcopy(openapi)
    page = _schemas(spec)["SearchResponse"]
    page["properties"]["elapsed_ms"] = page["properties"].pop("took_ms")
    page["required"] = [f if f != "took_ms" else "elapsed_ms" for f in page["required"]]
    drift = schema_drift(spec)
    assert any("SearchPage (server SearchResponse).took_ms: declared by the client" in d for d in drift), drift
    assert any(".elapsed_ms: required by the server, missing from the client" in d for d in drift), drift
    assert len(drift) == 2


@pytest.mark.parametrize(
    ("schema", "field", "change", "expected"),
    [
        # The server may now send null where the client wants a number.
        ("IndexedSegment", "start_s", {"anyOf": [{"type": "number"}, {"type": "null"}]}, "IndexedSegment.start_s"),
        # A new modality the client does not know.
        ("Hit", "modality", {"type": "string", "enum": ["visual", "speech", "page", "audio"]}, "Hit.modality"),
        # An integer field turned string.
        ("Health", "indexed_rows", {"anyOf": [{"type": "string"}, {"type": "null"}]}, "Health.indexed_rows"),
        # Hits of another model.
        ("SearchResponse", "hits", {"type": "array", "items": {"$ref": "#/components/schemas/MomentText"}}, ".hits"),
    ],
)
def test_a_type_the_client_would_refuse_is_drift(
    openapi: dict[str, Any], schema: str, field: str, change: dict[str, Any], expected: str
) -> None:
    spec = copy.deepcopy(openapi)
    _schemas(spec)[schema]["properties"][field] = change
    drift = schema_drift(spec)
    assert len(drift) == 1 and expected in drift[0] and "the server sends" in drift[0], drift


def test_compatible_changes_are_not_drift(openapi: dict[str, Any]) -> None:
    spec = copy.deepcopy(openapi)
    hit = _schemas(spec)["Hit"]
    hit["properties"]["rank"] = {"type": "integer"}  # a new optional field: ignored by the client
    _schemas(spec)["IndexedSegment"]["properties"]["start_s"] = {"type": "integer"}  # integers fit a float
    _schemas(spec)["Hit"]["properties"]["modality"]["enum"] = ["visual", "speech"]  # fewer values
    assert schema_drift(spec) == []


def test_a_field_the_server_made_optional_that_the_client_requires_is_drift(openapi: dict[str, Any]) -> None:
    spec = copy.deepcopy(openapi)
    _schemas(spec)["Health"]["required"].remove("auth")
    assert schema_drift(spec) == ["Health.auth: required by the client, optional on the server (it may be left out)"]


def test_a_missing_schema_is_drift(openapi: dict[str, Any]) -> None:
    spec = copy.deepcopy(openapi)
    del _schemas(spec)["ObjectResponse"]
    assert schema_drift(spec) == [
        "ObjectInfo (server ObjectResponse): the server's OpenAPI has no schema ObjectResponse"
    ]


@pytest.mark.impure  # a fresh interpreter: this one has imported the server already
def test_importing_the_client_imports_nothing_of_the_server() -> None:
    code = (
        "import json, sys\n"
        "import workers.client\n"
        "from workers.client import CapstreamClient, AsyncCapstreamClient, schema_drift\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {SERVER_ONLY!r}"
        f" or m.startswith({SERVER_ONLY!r}))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == []
