"""Telling a bad row from a bad day: which insert failures are the data's fault.

The sink retries a failed insert until it lands, because an outage must lose nothing.
A failure that is the data's own (a value ClickHouse or Arrow cannot hold) would fail
the same way for ever and stop the ledger for every tenant, so those are not retried:
the sink splits the batch until the rows at fault are alone and dead-letters them
with the error (reason `ledger_insert_failed`). Only the failures named here count as
data errors; anything else (a connection, a timeout, memory, a read-only replica, an
unknown code) is retried.

Inserts are also kept under ClickHouse's `max_partitions_per_insert_block` (100 by
default): a batch spanning more months is written in chunks of at most
`MAX_PARTITIONS_PER_INSERT` months. Raising the setting instead would let one request
create hundreds of parts in the ledger and in each of its materialized views at
once, which is what the limit protects against; chunking costs only the rare
backfill that spans years.

>>> is_data_error(ValueError("Rescaling Decimal value would cause data loss"))
True
>>> is_data_error(ConnectionError("refused"))
False
"""

from __future__ import annotations

import decimal
import re
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Any, TypeVar

import orjson
import pyarrow as pa

from schemas.payload import truncate_payload

T = TypeVar("T")

REFUSED_REASON = "ledger_insert_failed"
MAX_PARTITIONS_PER_INSERT = 90  # under ClickHouse's default of 100, with a margin

# ClickHouse error codes that name a value, not the server's state.
DATA_ERROR_CODES = frozenset(
    {
        6,  # CANNOT_PARSE_TEXT
        27,  # CANNOT_PARSE_INPUT_ASSERTION_FAILED
        38,  # CANNOT_PARSE_DATE
        41,  # CANNOT_PARSE_DATETIME
        53,  # TYPE_MISMATCH
        69,  # ARGUMENT_OUT_OF_BOUND
        70,  # CANNOT_CONVERT_TYPE
        72,  # CANNOT_PARSE_NUMBER
        117,  # INCORRECT_DATA
        131,  # TOO_LARGE_STRING_SIZE
        321,  # VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
        407,  # DECIMAL_OVERFLOW
        469,  # VIOLATED_CONSTRAINT
    }
)
# 252 is also "too many parts" (merges behind: wait and retry); only this text is data.
_PARTITIONS_PER_BLOCK = "partitions for single insert block"
_CODE = re.compile(r"Code: (\d+)\.")


class RowsRefused(Exception):
    """The owner worker refused a peer's insert for its data (HTTP 422): not retried."""


def is_data_error(exc: BaseException) -> bool:
    """True when the same rows would fail the same way on every retry."""
    if isinstance(exc, RowsRefused):
        return True
    if isinstance(exc, pa.ArrowInvalid | pa.ArrowTypeError | decimal.InvalidOperation):
        return True
    if isinstance(exc, OverflowError):
        return True
    if isinstance(exc, ValueError) and "Rescaling Decimal" in str(exc):
        return True
    code = getattr(exc, "code", None)
    if code is None and (match := _CODE.search(str(exc))):
        code = int(match.group(1))
    if code == 252:
        return _PARTITIONS_PER_BLOCK in str(exc).lower()
    return code in DATA_ERROR_CODES


def first_line(exc: BaseException, limit: int = 500) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:limit]


def partition_chunks(
    items: Sequence[T], key: Callable[[T], Hashable], limit: int = MAX_PARTITIONS_PER_INSERT
) -> Iterator[list[T]]:
    """`items` unchanged (one chunk) when they span at most `limit` keys; else chunks of
    at most `limit` keys each, every item of one key in the same chunk, keys in order
    of first appearance (deterministic, so a retry repeats the same chunks).

    >>> list(partition_chunks([1, 2, 3, 4, 5], key=lambda n: n % 3, limit=2))
    [[1, 4, 2, 5], [3]]
    """
    groups: dict[Hashable, list[T]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    if len(groups) <= limit:
        yield list(items)
        return
    keys = list(groups)
    for start in range(0, len(keys), limit):
        yield [item for k in keys[start : start + limit] for item in groups[k]]


def month_of(field: str) -> Callable[[dict[str, Any]], tuple[int, int]]:
    """The partition key of every spendstream table: the month of a datetime column."""

    def key(row: dict[str, Any]) -> tuple[int, int]:
        moment = row[field]
        return (moment.year, moment.month)

    return key


def refused_dead_letter(
    row: dict[str, Any], error: str, *, log_epoch: str, element_index: int
) -> dict[str, Any]:
    """The dead letter of a ledger row ClickHouse refused, at the row's source position;
    its payload is the row (no prompt text: a ledger row has none)."""
    payload = truncate_payload(orjson.dumps(row, default=str))
    return {
        "log_epoch": log_epoch,
        "topic": row["source_topic"],
        "partition": row["source_partition"],
        "offset": row["source_offset"],
        "element_index": element_index,
        "reason": REFUSED_REASON,
        "message": error,
        "raw_payload": payload,
        "payload_bytes": len(payload),
        "request_id": row["request_id"],
        "tenant_id": row["tenant_id"],
        "received_at": row["ingested_at"],
    }
