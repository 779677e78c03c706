"""Typed clients of the ``capstream serve`` HTTP API: ``CapstreamClient`` (sync) and
``AsyncCapstreamClient``, on httpx.

Both send the API key as ``Authorization: Bearer``, retry by ``RetryPolicy`` (``retry.py``),
turn error answers into the types of ``errors.py`` and parse answers into ``models.py``.
``search_all`` follows ``next_cursor`` page by page, so a caller never handles cursors; the
server pins a query's pages to the index version of its first page, so rows indexed meanwhile
neither repeat nor move hits.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote

import httpx

from workers.client.errors import AskFailed, NoResponse, error_for, retry_after_s
from workers.client.models import Answer, Health, Hit, Modality, Mode, ObjectInfo, ObjectPage, SearchPage
from workers.client.retry import RetryPolicy

log = logging.getLogger(__name__)

USER_AGENT = "capstream-client/1"


def _headers(api_key: str | None) -> dict[str, str]:
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def search_params(
    q: str,
    *,
    k: int | None = None,
    mode: Mode | None = None,
    bucket: str | None = None,
    prefix: str | None = None,
    object_id: str | None = None,
    per_object: int | None = None,
    modality: Modality | None = None,
    merge: bool = True,
    cursor: str | None = None,
) -> dict[str, str | int]:
    """The query string of ``/search``: unset parameters are left out, so the server's defaults apply."""
    given: dict[str, str | int | None] = {
        "q": q,
        "k": k,
        "mode": mode,
        "bucket": bucket,
        "prefix": prefix,
        "object_id": object_id,
        "per_object": per_object,
        "modality": modality,
        "merge": "true" if merge else "false",
        "cursor": cursor,
    }
    return {name: value for name, value in given.items() if value is not None}


def object_search_params(
    q: str,
    *,
    k: int | None = None,
    mode: Mode | None = None,
    bucket: str | None = None,
    prefix: str | None = None,
    modality: Modality | None = None,
) -> dict[str, str | int]:
    """The query string of ``/search/objects`` (unset parameters left out)."""
    given: dict[str, str | int | None] = {"q": q, "k": k, "mode": mode, "bucket": bucket, "prefix": prefix}
    given["modality"] = modality
    return {name: value for name, value in given.items() if value is not None}


def ask_body(
    question: str, *, k: int | None, object_id: str | None, bucket: str | None, prefix: str | None
) -> dict[str, str | int]:
    given: dict[str, str | int | None] = {
        "question": question,
        "k": k,
        "object_id": object_id,
        "bucket": bucket,
        "prefix": prefix,
    }
    return {name: value for name, value in given.items() if value is not None}


def answer_from_events(text: str) -> Answer:
    """The ``answer`` event of ``/ask``'s server-sent events; an ``error`` event raises."""
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if fields.get("event") == "answer":
            return Answer.model_validate_json(fields["data"])
        if fields.get("event") == "error":
            raise AskFailed(json.loads(fields["data"]).get("detail", "the server could not answer"))
    raise AskFailed("the stream ended without an answer")


def _object_path(object_id: str) -> str:
    return f"/objects/{quote(object_id, safe='')}"


def _thumbnail_path(segment_id: str) -> str:
    return f"/thumbnails/{quote(segment_id, safe='')}"


def _no_response(error: httpx.TransportError, tries: int) -> NoResponse:
    return NoResponse(f"{type(error).__name__} after {tries} tries: {error}")


class CapstreamClient:
    """``capstream serve``'s API, synchronously. Use as a context manager, or ``close()`` it.

    ``transport`` replaces httpx's (a ``MockTransport`` in tests); ``retries``, ``backoff`` and
    ``max_retry_after`` are the ``RetryPolicy``.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        *,
        timeout: float = 30.0,
        retries: int = 3,
        transport: httpx.BaseTransport | None = None,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        max_retry_after: float = 30.0,
    ) -> None:
        self.policy = RetryPolicy(retries, backoff, max_backoff, max_retry_after)
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"), headers=_headers(api_key), timeout=timeout, transport=transport
        )

    def __enter__(self) -> CapstreamClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _get(self, path: str, params: dict[str, str | int] | None = None) -> httpx.Response:
        return self._send("GET", path, params=params)

    def _send(
        self, method: str, path: str, *, params: dict[str, str | int] | None = None, json: Any = None
    ) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = self._http.request(method, path, params=params, json=json)
            except httpx.TransportError as exc:
                wait = self.policy.wait_after_error(exc, attempt)
                if wait is None:
                    raise _no_response(exc, attempt + 1) from exc
                log.info("capstream.retry %s %s after %s in %.2fs", method, path, type(exc).__name__, wait)
            else:
                if response.is_success:
                    return response
                retry_after = retry_after_s(response) if response.status_code == 429 else None
                wait = self.policy.wait_after(response, retry_after, attempt)
                if wait is None:
                    raise error_for(response)
                log.info("capstream.retry %s %s after %d in %.2fs", method, path, response.status_code, wait)
            time.sleep(wait)
            attempt += 1

    def ask(
        self,
        question: str,
        *,
        k: int | None = None,
        object_id: str | None = None,
        bucket: str | None = None,
        prefix: str | None = None,
    ) -> Answer:
        """An answer citing moments of the index (``POST /ask``; waits for the whole stream)."""
        body = ask_body(question, k=k, object_id=object_id, bucket=bucket, prefix=prefix)
        return answer_from_events(self._send("POST", "/ask", json=body).text)

    def search(
        self,
        q: str,
        *,
        k: int | None = None,
        mode: Mode | None = None,
        bucket: str | None = None,
        prefix: str | None = None,
        object_id: str | None = None,
        per_object: int | None = None,
        modality: Modality | None = None,
        merge: bool = True,
        cursor: str | None = None,
    ) -> SearchPage:
        """One page of hits (``k`` of them; None: the server's default)."""
        params = search_params(
            q,
            k=k,
            mode=mode,
            bucket=bucket,
            prefix=prefix,
            object_id=object_id,
            per_object=per_object,
            modality=modality,
            merge=merge,
            cursor=cursor,
        )
        return SearchPage.model_validate_json(self._get("/search", params).content)

    def search_objects(
        self,
        q: str,
        *,
        k: int | None = None,
        mode: Mode | None = None,
        bucket: str | None = None,
        prefix: str | None = None,
        modality: Modality | None = None,
    ) -> ObjectPage:
        """Whole objects ranked by their best moments, each with its summary and chapters."""
        params = object_search_params(q, k=k, mode=mode, bucket=bucket, prefix=prefix, modality=modality)
        return ObjectPage.model_validate_json(self._get("/search/objects", params).content)

    def search_all(
        self,
        q: str,
        *,
        k: int | None = None,
        mode: Mode | None = None,
        bucket: str | None = None,
        prefix: str | None = None,
        object_id: str | None = None,
        per_object: int | None = None,
        modality: Modality | None = None,
        merge: bool = True,
        max_hits: int | None = None,
    ) -> Iterator[Hit]:
        """Every hit of the query, best first, fetching ``k`` at a time by ``next_cursor``, up to
        ``max_hits``. A query deeper than the server's ``search_max_depth`` ends in ``InvalidRequest``."""
        cursor: str | None = None
        given = 0
        while max_hits is None or given < max_hits:
            page = self.search(
                q,
                k=k,
                mode=mode,
                bucket=bucket,
                prefix=prefix,
                object_id=object_id,
                per_object=per_object,
                modality=modality,
                merge=merge,
                cursor=cursor,
            )
            for hit in page.hits[: None if max_hits is None else max_hits - given]:
                yield hit
                given += 1
            if not page.next_cursor or not page.hits:
                return
            cursor = page.next_cursor

    def object(self, object_id: str) -> ObjectInfo:
        """An object's progress and indexed segments; ``NotFound`` for none, or another collection's."""
        return ObjectInfo.model_validate_json(self._get(_object_path(object_id)).content)

    def thumbnail(self, segment_id: str) -> bytes:
        """The segment's JPEG thumbnail (what a hit's ``thumbnail_url`` points at)."""
        return self._get(_thumbnail_path(segment_id)).content

    def health(self) -> Health:
        """The one route that needs no key: status, row count, whether keys are required."""
        return Health.model_validate_json(self._get("/healthz").content)

    def openapi(self) -> dict[str, Any]:
        """The server's OpenAPI document (``workers.client.schema_check.schema_drift`` reads it)."""
        spec: dict[str, Any] = self._get("/openapi.json").json()
        return spec


class AsyncCapstreamClient:
    """``CapstreamClient`` for asyncio: the same methods, awaited (``search_all`` is an async iterator)."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        *,
        timeout: float = 30.0,
        retries: int = 3,
        transport: httpx.AsyncBaseTransport | None = None,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        max_retry_after: float = 30.0,
    ) -> None:
        self.policy = RetryPolicy(retries, backoff, max_backoff, max_retry_after)
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), headers=_headers(api_key), timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> AsyncCapstreamClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _get(self, path: str, params: dict[str, str | int] | None = None) -> httpx.Response:
        return await self._send("GET", path, params=params)

    async def _send(
        self, method: str, path: str, *, params: dict[str, str | int] | None = None, json: Any = None
    ) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = await self._http.request(method, path, params=params, json=json)
            except httpx.TransportError as exc:
                wait = self.policy.wait_after_error(exc, attempt)
                if wait is None:
                    raise _no_response(exc, attempt + 1) from exc
                log.info("capstream.retry %s %s after %s in %.2fs", method, path, type(exc).__name__, wait)
            else:
                if response.is_success:
                    return response
                retry_after = retry_after_s(response) if response.status_code == 429 else None
                wait = self.policy.wait_after(response, retry_after, attempt)
                if wait is None:
                    raise error_for(response)
                log.info("capstream.retry %s %s after %d in %.2fs", method, path, response.status_code, wait)
            await asyncio.sleep(wait)
            attempt += 1

    async def ask(
        self,
        question: str,
        *,
        k: int | None = None,
        object_id: str | None = None,
        bucket: str | None = None,
        prefix: str | None = None,
    ) -> Answer:
        """An answer citing moments of the index (``POST /ask``; waits for the whole stream)."""
        body = ask_body(question, k=k, object_id=object_id, bucket=bucket, prefix=prefix)
        return answer_from_events((await self._send("POST", "/ask", json=body)).text)

    async def search(
        self,
        q: str,
        *,
        k: int | None = None,
        mode: Mode | None = None,
        bucket: str | None = None,
        prefix: str | None = None,
        object_id: str | None = None,
        per_object: int | None = None,
        modality: Modality | None = None,
        merge: bool = True,
        cursor: str | None = None,
    ) -> SearchPage:
        params = search_params(
            q,
            k=k,
            mode=mode,
            bucket=bucket,
            prefix=prefix,
            object_id=object_id,
            per_object=per_object,
            modality=modality,
            merge=merge,
            cursor=cursor,
        )
        return SearchPage.model_validate_json((await self._get("/search", params)).content)

    async def search_objects(
        self,
        q: str,
        *,
        k: int | None = None,
        mode: Mode | None = None,
        bucket: str | None = None,
        prefix: str | None = None,
        modality: Modality | None = None,
    ) -> ObjectPage:
        """Whole objects ranked by their best moments, each with its summary and chapters."""
        params = object_search_params(q, k=k, mode=mode, bucket=bucket, prefix=prefix, modality=modality)
        return ObjectPage.model_validate_json((await self._get("/search/objects", params)).content)

    async def search_all(
        self,
        q: str,
        *,
        k: int | None = None,
        mode: Mode | None = None,
        bucket: str | None = None,
        prefix: str | None = None,
        object_id: str | None = None,
        per_object: int | None = None,
        modality: Modality | None = None,
        merge: bool = True,
        max_hits: int | None = None,
    ) -> AsyncIterator[Hit]:
        cursor: str | None = None
        given = 0
        while max_hits is None or given < max_hits:
            page = await self.search(
                q,
                k=k,
                mode=mode,
                bucket=bucket,
                prefix=prefix,
                object_id=object_id,
                per_object=per_object,
                modality=modality,
                merge=merge,
                cursor=cursor,
            )
            for hit in page.hits[: None if max_hits is None else max_hits - given]:
                yield hit
                given += 1
            if not page.next_cursor or not page.hits:
                return
            cursor = page.next_cursor

    async def object(self, object_id: str) -> ObjectInfo:
        return ObjectInfo.model_validate_json((await self._get(_object_path(object_id))).content)

    async def thumbnail(self, segment_id: str) -> bytes:
        return (await self._get(_thumbnail_path(segment_id))).content

    async def health(self) -> Health:
        return Health.model_validate_json((await self._get("/healthz")).content)

    async def openapi(self) -> dict[str, Any]:
        spec: dict[str, Any] = (await self._get("/openapi.json")).json()
        return spec
