"""Webhook signatures, URL vetting and the body's shape, without services."""

from __future__ import annotations

import asyncio
import time

import pytest

from workers.access.collections import s3_parts
from workers.runtime.outbound import url_refusal
from workers.webhooks.poster import WebhookPoster
from workers.webhooks.signing import sign, verify
from workers.webhooks.stage import delivery_id

SECRET = "whsec_test"
BODY = b'{"id":"whd_1","type":"object.done"}'


def test_a_signature_verifies_only_for_its_body_secret_and_time() -> None:
    header = sign(SECRET, BODY)
    assert verify(header, SECRET, BODY)
    assert not verify(header, SECRET, BODY + b" ")  # tampered body
    assert not verify(header, "whsec_other", BODY)
    old = sign(SECRET, BODY, timestamp=int(time.time()) - 600)
    assert not verify(old, SECRET, BODY)  # replayed outside the tolerance
    assert verify(old, SECRET, BODY, tolerance_s=900)
    assert not verify("v1=abc", SECRET, BODY) and not verify("t=x,v1=abc", SECRET, BODY)
    # A receiver rotating secrets may see two v1 values; one matching is enough.
    t = header.split(",")[0]
    assert verify(f"{t},v1=00,{header.split(',')[1]}", SECRET, BODY)


@pytest.mark.parametrize(
    ("url", "refused"),
    [
        ("ftp://example.com/hook", "only http(s)"),
        ("http:///nohost", "only http(s)"),
        ("http://metadata.google.internal/computeMetadata", "metadata endpoint"),
        ("https://hooks.example.com/capstream", None),
    ],
)
def test_webhook_urls_are_vetted_before_any_lookup(url: str, refused: str | None) -> None:
    reason = url_refusal(url)
    assert (reason is None) if refused is None else (reason is not None and refused in reason)


@pytest.mark.parametrize(
    ("url", "allow_private", "why"),
    [
        ("http://127.0.0.1:9/hook", False, "CAPSTREAM_WEBHOOK_ALLOW_PRIVATE"),
        ("http://10.0.0.5/hook", False, "private address"),
        ("http://169.254.169.254/latest/meta-data", True, "metadata endpoint"),
        ("http://[fe80::1]/hook", True, "link-local"),
    ],
)
def test_refused_addresses_are_never_connected_to(url: str, allow_private: bool, why: str) -> None:
    poster = WebhookPoster(timeout_s=1.0, allow_private=allow_private)
    try:
        result = asyncio.run(poster.post(url, SECRET, BODY, {}))
    finally:
        asyncio.run(poster.close())
    assert not result.ok and result.permanent and why in result.detail


def test_delivery_ids_are_stable_per_webhook_and_outcome() -> None:
    assert delivery_id("wh_a", "o@1-0") == delivery_id("wh_a", "o@1-0")
    assert len({delivery_id("wh_a", "o@1-0"), delivery_id("wh_b", "o@1-0"), delivery_id("wh_a", "o@2-0")}) == 3


def test_s3_parts() -> None:
    assert s3_parts("s3://media/clips/a b.mp4") == ("media", "clips/a b.mp4")
    assert s3_parts("https://cdn.example/v.mp4") == (None, None)
