"""Who is asking: the API key of a ``capstream serve`` request, and what it may see.

Every data route depends on ``Authenticator``: ``Authorization: Bearer csk_...`` names an active
key (else 401, the same answer for a missing, malformed, unknown or revoked key), the key's
rate limit is counted (429 with ``Retry-After``; so are wrong secrets for one key id past
``FAILED_CHECKS_PER_MIN``, refused without hashing), and the ``Caller`` it returns carries the
key's collections, which every route applies inside its query. Another collection's object,
segment or thumbnail is answered 404, exactly as one that does not exist.

``--no-auth`` (``CAPSTREAM_SERVE_AUTH=false``) is for a server on a loopback address only: the
caller then sees every collection, and the page and the startup log say so.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from workers.access.api_keys import ApiKey, ApiKeyStore, RateLimited

_UNAUTHORIZED = {"WWW-Authenticate": 'Bearer realm="capstream"'}


@dataclass(frozen=True)
class Caller:
    key: ApiKey | None  # None: --no-auth
    collections: list[str] | None  # None: every collection

    def may_see(self, collection: str | None) -> bool:
        return self.collections is None or (collection is not None and collection in self.collections)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Authenticator:
    """Checks a request's key; the app keeps one in ``app.state.authenticator``."""

    def __init__(self, required: bool, rate_per_minute: int) -> None:
        self.required = required  # False: --no-auth
        self.rate_per_minute = rate_per_minute
        self.store: ApiKeyStore | None = None  # set when the server starts (it needs Redis)

    async def __call__(self, request: Request) -> Caller:
        if not self.required:
            return Caller(key=None, collections=None)
        if self.store is None:
            raise HTTPException(status_code=503, detail="starting")
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        try:
            key = await self.store.verify(token.strip()) if scheme.lower() == "bearer" else None
            if key is None:
                raise HTTPException(status_code=401, detail="a valid API key is required", headers=_UNAUTHORIZED)
            if self.rate_per_minute:
                await self.store.take(key.key_id, self.rate_per_minute)
        except RateLimited as exc:
            raise HTTPException(
                status_code=429, detail=str(exc), headers={"Retry-After": str(exc.retry_after_s)}
            ) from None
        return Caller(key=key, collections=key.collections)


async def current_caller(request: Request) -> Caller:
    authenticator: Authenticator = request.app.state.authenticator
    return await authenticator(request)


Authorized = Annotated[Caller, Depends(current_caller)]
"""A data route's parameter: the caller, after its key was checked and counted."""
