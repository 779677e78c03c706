"""Is the client still in step with the server? ``schema_drift`` compares the client's models
with the component schemas of the server's OpenAPI document.

The client's models are written by hand (generating them would tie the client to the server's
code or a build step), so this check is what keeps them honest: a unit test runs it against the
app's document, and a caller can run it against a live server (``client.openapi()``). For each
pair of models:

- every field the client declares exists in the server's schema, and the client accepts every
  JSON type the server may send in it (``integer`` fits a client ``number``; a ``null`` the
  server may send must be allowed; enum values the server may send must be known to the client);
- every field the server requires is declared by the client, and a field the client requires
  (no default) is one the server requires too.

Fields the server adds as optional are not drift: the client ignores unknown fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from workers.client.models import (
    Answer,
    AnswerMoment,
    AnswerTimings,
    Chapter,
    Health,
    Hit,
    IndexedSegment,
    MomentText,
    ObjectHit,
    ObjectInfo,
    ObjectPage,
    SearchPage,
    Summary,
)

# Client model -> the server's component schema it reads.
PAIRS: dict[type[BaseModel], str] = {
    SearchPage: "SearchResponse",
    Hit: "Hit",
    MomentText: "MomentText",
    ObjectInfo: "ObjectResponse",
    Summary: "Summary",
    Chapter: "LinkedChapter",
    ObjectPage: "ObjectSearchResponse",
    ObjectHit: "ObjectSearchHit",
    IndexedSegment: "IndexedSegment",
    Health: "Health",
    Answer: "Answer",
    AnswerMoment: "Moment",
    AnswerTimings: "Timings",
}
_SERVER_NAME = {model.__name__: name for model, name in PAIRS.items()}


@dataclass(frozen=True)
class _Alt:
    """One alternative of a JSON schema (a member of ``anyOf``, or the whole schema)."""

    kind: str  # a JSON type, "ref" or "any"
    enum: frozenset[Any] | None = None
    ref: str | None = None  # the server's schema name the reference stands for
    items: dict[str, Any] | None = None  # an array's item schema

    def describe(self) -> str:
        if self.kind == "ref":
            return str(self.ref)
        if self.kind == "array":
            return "array"
        if self.enum is not None:
            return f"{self.kind} {sorted(map(str, self.enum))}"
        return self.kind


def _ref_name(ref: str, client: bool) -> str:
    name = ref.rsplit("/", 1)[-1]
    return _SERVER_NAME.get(name, name) if client else name


def _alternatives(schema: dict[str, Any], client: bool) -> list[_Alt]:
    if "anyOf" in schema or "oneOf" in schema:
        return [alt for member in schema.get("anyOf", schema.get("oneOf", [])) for alt in _alternatives(member, client)]
    if "$ref" in schema:
        return [_Alt("ref", ref=_ref_name(schema["$ref"], client))]
    if "allOf" in schema and len(schema["allOf"]) == 1:  # older generators wrap a lone $ref so
        return _alternatives(schema["allOf"][0], client)
    enum: frozenset[Any] | None = None
    if "enum" in schema:
        enum = frozenset(schema["enum"])
    elif "const" in schema:
        enum = frozenset([schema["const"]])
    kinds = schema.get("type")
    if kinds is None:
        return [_Alt("any")] if enum is None else [_Alt("enum", enum=enum)]
    if isinstance(kinds, str):
        kinds = [kinds]
    return [_Alt(kind, enum=enum, items=schema.get("items") if kind == "array" else None) for kind in kinds]


def _accepts(client: _Alt, server: _Alt, where: str) -> bool:
    if client.kind == "any":
        return True
    if client.kind == "enum":  # an untyped enum: only its values
        return client.enum is not None and server.enum is not None and server.enum <= client.enum
    if client.kind != server.kind and not (client.kind == "number" and server.kind == "integer"):
        return False
    if client.enum is not None and (server.enum is None or not server.enum <= client.enum):
        return False
    if client.kind == "ref":
        return client.ref == server.ref
    if client.kind == "array":
        return not _type_drift(client.items or {}, server.items or {}, where + "[]")
    return True


def _type_drift(client: dict[str, Any], server: dict[str, Any], where: str) -> list[str]:
    """What the server may send in a field that the client would refuse."""
    client_alts, server_alts = _alternatives(client, True), _alternatives(server, False)
    refused = [s for s in server_alts if not any(_accepts(c, s, where) for c in client_alts)]
    if not refused:
        return []
    sent = " | ".join(s.describe() for s in server_alts)
    taken = " | ".join(c.describe() for c in client_alts)
    return [f"{where}: the server sends {sent}, the client accepts {taken}"]


def model_drift(model: type[BaseModel], server_name: str, components: dict[str, Any]) -> list[str]:
    """The differences between one client model and the server's schema ``server_name``."""
    name = f"{model.__name__} (server {server_name})" if model.__name__ != server_name else server_name
    server = components.get(server_name)
    if server is None:
        return [f"{name}: the server's OpenAPI has no schema {server_name}"]
    client = model.model_json_schema()
    server_fields: dict[str, Any] = server.get("properties", {})
    client_fields: dict[str, Any] = client.get("properties", {})
    server_required, client_required = set(server.get("required", [])), set(client.get("required", []))
    drift = []
    for field, schema in client_fields.items():
        if field not in server_fields:
            drift.append(f"{name}.{field}: declared by the client, not in the server's schema")
            continue
        drift += _type_drift(schema, server_fields[field], f"{name}.{field}")
        if field in client_required and field not in server_required:
            drift.append(f"{name}.{field}: required by the client, optional on the server (it may be left out)")
    drift += [
        f"{name}.{field}: required by the server, missing from the client"
        for field in sorted(server_required - set(client_fields))
    ]
    return drift


def schema_drift(openapi: dict[str, Any]) -> list[str]:
    """Every difference between the client's models and ``openapi``'s component schemas, as
    sentences; empty when the client reads every answer the server documents."""
    components: dict[str, Any] = openapi.get("components", {}).get("schemas", {})
    return [line for model, server_name in PAIRS.items() for line in model_drift(model, server_name, components)]
