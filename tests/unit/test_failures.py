"""What the loop does with an exception: bad content is permanent, with its own reason."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from workers.runtime.failures import Failure, classify, permanent_reason


def _recursion_error() -> RecursionError:
    try:
        json.loads("[" * 100_000 + "]" * 100_000)
    except RecursionError as exc:
        return exc
    raise AssertionError("json did not recurse")


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (_recursion_error(), "input_too_deep"),
        (UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"), "invalid_text"),
        (Image.DecompressionBombError("too many pixels"), "resolution_too_large"),
    ],
)
def test_content_errors_are_permanent_with_a_reason(exc: BaseException, reason: str) -> None:
    assert classify(exc) is Failure.PERMANENT
    assert permanent_reason(exc) == reason


def test_ordinary_errors_stay_transient() -> None:
    assert classify(RuntimeError("engine hiccup")) is Failure.TRANSIENT
    assert classify(OSError(5, "Input/output error")) is Failure.TRANSIENT
    assert permanent_reason(RuntimeError("x")) is None
