"""Event filters and source security of the decode worker (no services)."""

from __future__ import annotations

import pytest

from schemas.events import ObjectCreated
from workers.decode.filters import EventFilter
from workers.decode.source import ObjectSource, address_refusal
from workers.runtime.errors import PermanentError
from workers.settings import DecodeSettings


def _obj(key: str = "clips/a.MP4", bucket: str = "media", **kw: object) -> ObjectCreated:
    return ObjectCreated(uri=f"s3://{bucket}/{key}", bucket=bucket, key=key, **kw)  # type: ignore[arg-type]


def test_default_filter_lets_everything_through_and_flags_declared_oversize() -> None:
    f = EventFilter.from_settings(DecodeSettings())
    assert f.rejects(_obj(size=10)) is None and f.too_large(_obj(size=10)) is None
    # Oversize is not a filter decision (it is dead-lettered), but it is known from the event.
    assert f.rejects(_obj(size=3 * 1024**3)) is None
    assert "over CAPSTREAM_MAX_OBJECT_BYTES" in (f.too_large(_obj(size=3 * 1024**3)) or "")
    assert f.too_large(_obj()) is None, "no declared size: the decoder's HEAD check decides"


def test_configured_filters() -> None:
    f = EventFilter.from_settings(
        DecodeSettings(
            filter_buckets="media,raw",
            filter_key_prefixes="clips/,uploads/",
            filter_key_suffixes=".mp4,.mov",
            filter_content_types="video/*",
        )
    )
    assert f.rejects(_obj()) is None  # suffix match ignores case
    assert f.rejects(_obj(bucket="other")) == "bucket"
    assert f.rejects(_obj(key="thumbs/a.mp4")) == "key_prefix"
    assert f.rejects(_obj(key="clips/a.txt")) == "key_suffix"
    assert f.rejects(_obj(content_type="image/jpeg")) == "content_type"
    assert f.rejects(_obj(content_type="video/mp4; codecs=avc1")) is None
    native = ObjectCreated(uri="file:///tmp/a.mkv")
    assert f.rejects(native) is None, "bucket/key filters apply to S3 objects only"


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("169.254.169.254", "metadata endpoint"),
        ("169.254.10.1", "link-local"),
        ("fe80::1", "link-local"),
        ("::ffff:169.254.169.254", "metadata endpoint"),
        ("fd00:ec2::254", "metadata endpoint"),
        ("0.0.0.0", "not a unicast host"),
        ("127.0.0.1", "private"),
        ("10.1.2.3", "private"),
        ("93.184.215.14", None),
    ],
)
def test_address_refusal(address: str, refused: str | None) -> None:
    reason = address_refusal(address, allow_private=False)
    assert (reason is None) if refused is None else (reason is not None and refused in reason)


def test_private_addresses_only_with_opt_in_and_link_local_never() -> None:
    assert address_refusal("127.0.0.1", allow_private=True) is None
    assert address_refusal("169.254.169.254", allow_private=True) is not None


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("http://169.254.169.254/latest/meta-data/iam/security-credentials/", "address_not_allowed"),
        ("http://metadata.google.internal/computeMetadata/v1/", "address_not_allowed"),
        ("https://127.0.0.1:8443/a.mp4", "address_not_allowed"),
        ("file:///etc/passwd", "scheme_not_allowed"),
    ],
)
async def test_untrusted_sources_are_refused(uri: str, reason: str) -> None:
    source = ObjectSource(DecodeSettings(allowed_schemes="s3,http,https"))
    with pytest.raises(PermanentError) as info:
        await source.resolve(ObjectCreated(uri=uri))
    assert info.value.reason == reason


async def test_http_sources_are_refused_by_default() -> None:
    with pytest.raises(PermanentError) as info:
        await ObjectSource(DecodeSettings()).resolve(ObjectCreated(uri="https://example.com/a.mp4"))
    assert info.value.reason == "scheme_not_allowed"


def test_ffmpeg_options_retry_transient_http_errors() -> None:
    source = ObjectSource(DecodeSettings(read_retries=2))
    opts = source.ffmpeg_options("http://127.0.0.1:9000/media/a.mp4?X-Amz-Signature=x")
    assert opts["reconnect"] == "1" and opts["reconnect_max_retries"] == "2"
    assert "5xx" in opts["reconnect_on_http_error"]
    assert source.ffmpeg_options("/tmp/a.mp4") == {}
