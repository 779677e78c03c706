"""Index write errors are classified by type and status code, never by the words in their text.

The pyarrow errors are the real ones, from converting a row its column cannot hold; what
LanceDB's Rust core raises (the same ValueError/RuntimeError for an unreachable store and for
bad input) is covered against a real store in ``tests/integration/test_index_store_faults.py``.
"""

from __future__ import annotations

import errno

import pyarrow as pa
import pytest
from lancedb.remote.errors import HttpError, RetryError

from workers.index.faults import UNWRITABLE_ROW, Fault, classify, status_fault, unwritable_row
from workers.runtime.errors import UnavailableError
from workers.runtime.failures import Failure
from workers.runtime.failures import classify as loop_classify

_SCHEMA = pa.schema([pa.field("segment_index", pa.int32()), pa.field("vector", pa.list_(pa.float32(), 4))])


def _conversion_error(row: dict[str, object]) -> BaseException:
    with pytest.raises(Exception) as info:
        pa.Table.from_pylist([row], schema=_SCHEMA)
    return info.value


@pytest.mark.parametrize(
    "row",
    [
        {"segment_index": 2**40, "vector": [1.0] * 4},  # over int32: ArrowInvalid
        {"segment_index": 1, "vector": [1.0] * 3},  # another width: ArrowInvalid
        {"segment_index": "one", "vector": [1.0] * 4},  # ArrowInvalid / ArrowTypeError
    ],
)
def test_a_row_its_columns_cannot_hold_is_a_data_error(row: dict[str, object]) -> None:
    assert classify(_conversion_error(row)) is Fault.DATA


def test_a_lone_surrogate_is_a_data_error() -> None:
    with pytest.raises(UnicodeEncodeError) as info:
        pa.Table.from_pylist([{"caption": "\ud800"}], schema=pa.schema([pa.field("caption", pa.string())]))
    assert classify(info.value) is Fault.DATA


def test_words_in_a_data_error_do_not_make_it_an_outage() -> None:
    # The words the old text match took for an outage, in an error whose type is the data's.
    for text in ("IO error converting 'connect timed out'", "LanceError(IO): object store permission denied"):
        assert classify(pa.ArrowInvalid(text)) is Fault.DATA
        assert classify(OverflowError(text)) is Fault.DATA


@pytest.mark.parametrize(
    "exc",
    [
        OSError(errno.EIO, "I/O error"),  # what LanceDB raises for its object-store errors
        ConnectionRefusedError(),
        TimeoutError(),
        PermissionError(errno.EACCES, "denied"),
        OSError(errno.ENOSPC, "No space left on device"),
        UnavailableError("down"),
    ],
)
def test_io_errors_by_type_are_outages(exc: BaseException) -> None:
    assert classify(exc) is Fault.OUTAGE


@pytest.mark.parametrize(
    "exc",
    [
        # LanceDB's Rust core: the same types for a store that is down and for bad input.
        ValueError("Invalid input, Failed to connect to namespace: IO { ... }"),
        RuntimeError("lance error: LanceError(IO): Generic S3 error"),
        RuntimeError("Arrow error: C Data interface error: Invalid: Vector column 'vector' has NaNs"),
        ValueError("Invalid input, The field `id` contained null values"),
    ],
)
def test_types_that_say_nothing_are_unknown_whatever_the_words(exc: BaseException) -> None:
    assert classify(exc) is Fault.UNKNOWN


@pytest.mark.parametrize(
    ("status", "fault"),
    [
        (None, Fault.OUTAGE),  # no response
        (500, Fault.OUTAGE),
        (503, Fault.OUTAGE),
        (429, Fault.OUTAGE),
        (408, Fault.OUTAGE),
        (403, Fault.OUTAGE),  # refused credentials: not the row's fault
        (401, Fault.OUTAGE),
        (400, Fault.DATA),
        (413, Fault.DATA),
        (422, Fault.DATA),
        (404, Fault.UNKNOWN),
        (409, Fault.UNKNOWN),
    ],
)
def test_remote_errors_by_status_code(status: int | None, fault: Fault) -> None:
    assert status_fault(status) is fault
    assert classify(HttpError("http error", "req-1", status)) is fault
    assert classify(RetryError("gave up", "req-2", 0, 0, 0, 3, 3, 3, status)) is fault


def test_an_unwritable_row_is_dead_lettered_at_once_with_its_reason() -> None:
    error = unwritable_row(pa.ArrowInvalid("Value 1099511627776 too large"), object_id="o", segment_id="s")
    assert (error.reason, error.object_id, error.segment_id) == (UNWRITABLE_ROW, "o", "s")
    assert "ArrowInvalid" in str(error) and "dlq replay" in str(error)
    assert loop_classify(error) is Failure.PERMANENT
