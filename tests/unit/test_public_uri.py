"""What serve says of a source: never a query string (a presigned or tokened URL) or user info."""

from __future__ import annotations

from workers.runtime.outbound import public_uri


def test_source_uris_lose_what_may_be_secret() -> None:
    assert public_uri("https://u:pw@cdn.example/v.mp4?X-Amz-Signature=abc&token=t#x") == "https://cdn.example/v.mp4"
    assert public_uri("s3://media/clips/a b.mp4") == "s3://media/clips/a b.mp4"
