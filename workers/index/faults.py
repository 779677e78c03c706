"""What an index write's exception says: the store is out, the row is bad, or it cannot tell.

The index stage must wait out a store outage without spending a record's retries, and must
dead-letter a row the table can never hold without holding back the rows batched with it.
It used to decide by matching words ("IO", "connect") in the error text, so a data error
whose text contained one of them waited forever as an outage. It now decides by exception
types and HTTP status codes, and where those say nothing, by asking the store.

What LanceDB 0.40 and pyarrow 26 actually raise (measured against SeaweedFS S3 and local
disk; ``tests/unit/test_index_faults.py`` pins the pyarrow side):

- pyarrow, converting our rows before any store call: ``ArrowInvalid`` for a value its column
  cannot hold (a ``segment_index`` over int32, a vector of the wrong length),
  ``ArrowTypeError``, ``OverflowError``, ``UnicodeEncodeError`` for a lone surrogate. Always
  the data: DATA.
- LanceDB's object-store errors it types itself: ``OSError`` (``IOError``). Remote LanceDB:
  ``lancedb.remote.errors.HttpError`` / ``RetryError`` with ``status_code``. By status: OUTAGE
  or DATA.
- LanceDB's Rust core otherwise: the *same* types for both causes. A store that is down
  raises ``ValueError("Invalid input, Failed to connect ...")`` when a connection opens and
  ``RuntimeError("lance error: LanceError(IO) ...")`` on a write; a NaN vector raises
  ``RuntimeError``, a null in a non-null column ``ValueError``. These are UNKNOWN: the
  batcher probes the store (an outage if it does not answer) and writes the batch in halves
  down to single rows, so only a row that fails alone is blamed (``workers.index.batcher``).
"""

from __future__ import annotations

from enum import StrEnum

import pyarrow as pa
from lancedb.remote.errors import LanceDBClientError

from workers.runtime.errors import PermanentError, UnavailableError


class Fault(StrEnum):
    OUTAGE = "outage"  # the store is unreachable or refuses us: wait, the try does not count
    DATA = "data"  # this row can never be written: dead-letter it, write the others
    UNKNOWN = "unknown"  # the type does not say: probe the store, isolate the rows


# Raised by pyarrow while it converts rows to the table's columns, before any store call.
_DATA_TYPES: tuple[type[BaseException], ...] = (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, UnicodeError)
# No response (None), a timeout, throttling, the server's own failure, or credentials the
# store refuses: none of them is the row's fault.
_OUTAGE_STATUS = frozenset({401, 403, 408, 429})
# The request itself was refused as invalid or too large.
_DATA_STATUS = frozenset({400, 413, 422})

UNWRITABLE_ROW = "unwritable_row"  # the dead-letter reason of a row that fails alone


def status_fault(status: int | None) -> Fault:
    """The fault an HTTP status of the store means."""
    if status is None or status >= 500 or status in _OUTAGE_STATUS:
        return Fault.OUTAGE
    if status in _DATA_STATUS:
        return Fault.DATA
    return Fault.UNKNOWN


def classify(exc: BaseException) -> Fault:
    """The fault ``exc`` is by its type (and HTTP status), never by its text."""
    if isinstance(exc, UnavailableError):
        return Fault.OUTAGE
    if isinstance(exc, LanceDBClientError):  # a RuntimeError: check before the generic types
        return status_fault(exc.status_code)
    if isinstance(exc, _DATA_TYPES):  # ArrowInvalid is a ValueError, UnicodeError too: first
        return Fault.DATA
    if isinstance(exc, OSError):  # IOError, ConnectionError, TimeoutError, PermissionError, ...
        return Fault.OUTAGE
    return Fault.UNKNOWN


def unavailable(exc: BaseException) -> UnavailableError:
    """The outage as the consumer loop waits it out."""
    return UnavailableError(f"index store unavailable: {type(exc).__name__}: {str(exc)[:500]}")


def unwritable_row(exc: BaseException, *, object_id: str, segment_id: str) -> PermanentError:
    """The dead letter of a row that failed alone with a data error while its batch-mates were written."""
    return PermanentError(
        UNWRITABLE_ROW,
        f"the index table cannot hold this row: {type(exc).__name__}: {str(exc)[:500]}. The other rows of "
        "its batch were written. Fix the producer of this embedding, then `capstream dlq replay --stage index "
        f"--reason {UNWRITABLE_ROW}`.",
        object_id=object_id,
        segment_id=segment_id,
    )
