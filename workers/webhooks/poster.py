"""``WebhookPoster``: one signed POST to a webhook URL, to a vetted address only.

The URL's host is resolved and every address vetted at each POST (``workers.runtime.outbound``:
never a metadata or link-local address; loopback and private ones only with
``CAPSTREAM_WEBHOOK_ALLOW_PRIVATE``), and the connection goes to the vetted address, so a DNS
answer that changes after ``webhooks add`` cannot point a delivery inward. Redirects are not
followed (a 3xx is a failed try).
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass

import httpx

from workers.runtime.errors import PermanentError
from workers.runtime.outbound import address_refusal, pinned_request, public_uri, vet_host
from workers.webhooks.signing import SIGNATURE_HEADER, sign


@dataclass(frozen=True)
class PostResult:
    ok: bool
    detail: str  # "HTTP 500", "ReadTimeout", "address_not_allowed: ..."
    permanent: bool = False  # retrying cannot help (the address is refused)


class WebhookPoster:
    def __init__(self, timeout_s: float, allow_private: bool) -> None:
        self._vet = functools.partial(
            address_refusal, allow_private=allow_private, opt_in="CAPSTREAM_WEBHOOK_ALLOW_PRIVATE"
        )
        self._client = httpx.AsyncClient(timeout=timeout_s, follow_redirects=False)

    async def close(self) -> None:
        await self._client.aclose()

    async def post(self, url: str, secret: str, body: bytes, headers: dict[str, str]) -> PostResult:
        try:
            address = await asyncio.to_thread(vet_host, url, self._vet)
        except PermanentError as exc:
            return PostResult(False, f"{exc.reason}: {exc}", permanent=exc.reason == "address_not_allowed")
        target, host_header, extensions = pinned_request(url, address)
        request = self._client.build_request(
            "POST",
            target,
            content=body,
            headers={
                **host_header,
                **headers,
                "Content-Type": "application/json",
                "User-Agent": "capstream-webhooks",
                SIGNATURE_HEADER: sign(secret, body),
            },
            extensions=extensions,
        )
        try:
            response = await self._client.send(request)
        except httpx.HTTPError as exc:
            return PostResult(False, f"{type(exc).__name__} from {public_uri(url)}")
        if 200 <= response.status_code < 300:
            return PostResult(True, f"HTTP {response.status_code}")
        return PostResult(False, f"HTTP {response.status_code} from {public_uri(url)}")
