"""CSV files → usage event dicts, for `spendstream replay` backfills.

The header names contract fields (`request_id,timestamp,tenant_id,...`), in
any order. Per cell:
- an empty cell is omitted, so the field takes its default (or is reported
  missing when required);
- integer fields (token counts, `request_count`, `latency_ms`,
  `status_code`, `retry_count`) are parsed when the cell is a whole number
  (`1200`); anything else (`1,200`, `12.5`) is kept as text, so validation
  dead-letters the row with its reason instead of guessing;
- `timestamp` is RFC 3339 text, or digits for epoch milliseconds;
- tags come from a `tags` column holding a JSON object, and/or from
  `tags.<name>` columns (one per tag); a `tags.<name>` cell wins over the
  same name in the JSON object.

A header with an unknown column (a misspelt field would otherwise vanish
silently) or without a required field, and a row with more cells than the
header, fail the whole file with `CsvFormatError` before anything is
published: a backfill is re-run after fixing the file. A row with fewer cells
reads its missing cells as empty (some tools drop trailing empty cells).

>>> import io
>>> rows = io.StringIO("request_id,timestamp,tenant_id,provider,model,input_tokens,tags.team\\n"
...                    "r1,1700000000000,acme,openai,gpt-4o-mini,1200,search\\n")
>>> next(events_from_csv(rows))
{'request_id': 'r1', 'timestamp': 1700000000000, 'tenant_id': 'acme', \
'provider': 'openai', 'model': 'gpt-4o-mini', 'input_tokens': 1200, 'tags': {'team': 'search'}}
"""

from __future__ import annotations

import csv
import io
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

import orjson

from schemas.usage_event import UsageEvent
from streams.errors import ConfigError
from streams.ingest.decoding import REQUIRED_FIELDS, TOKEN_FIELDS

CONTRACT_FIELDS = frozenset(UsageEvent.model_fields)
INT_FIELDS = TOKEN_FIELDS | {"request_count", "latency_ms", "status_code", "retry_count"}
TAGS_COLUMN = "tags"
TAG_PREFIX = "tags."
_WHOLE_NUMBER = re.compile(r"[+-]?\d+")


class CsvFormatError(ConfigError):
    """A CSV file whose shape (header or row width) is wrong."""


def is_csv_path(path: str) -> bool:
    return Path(path).suffix.lower() == ".csv"


def _check_header(columns: list[str], source: str) -> None:
    unknown = [
        c
        for c in columns
        if c not in CONTRACT_FIELDS and not (c.startswith(TAG_PREFIX) and len(c) > len(TAG_PREFIX))
    ]
    if unknown:
        raise CsvFormatError(
            f"{source}: unknown column(s) {', '.join(map(repr, unknown))}; the header must "
            f"name contract fields or tags.<name>"
        )
    missing = [f for f in REQUIRED_FIELDS if f not in columns]
    if missing:
        raise CsvFormatError(f"{source}: header lacks required column(s): {', '.join(missing)}")
    duplicated = sorted({c for c in columns if columns.count(c) > 1})
    if duplicated:
        raise CsvFormatError(f"{source}: column(s) repeated: {', '.join(duplicated)}")


def _cell(field: str, text: str) -> Any:
    if field in INT_FIELDS and _WHOLE_NUMBER.fullmatch(text):
        return int(text)
    if field == "timestamp" and text.isdigit():
        return int(text)
    if field == TAGS_COLUMN:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            return text  # not an object: validation rejects the row, with the text kept
    return text


def events_from_csv(handle: TextIO, source: str = "<csv>") -> Iterator[dict[str, Any]]:
    """One event dict per data row of `handle` (opened with `newline=""`)."""
    reader = csv.reader(handle)
    header = next(reader, None)
    if header is None:
        return
    columns = [c.strip() for c in header]
    _check_header(columns, source)
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        if len(row) > len(columns):
            raise CsvFormatError(
                f"{source}:{reader.line_num}: row has {len(row)} cells, the header {len(columns)}"
            )
        event: dict[str, Any] = {}
        tags: dict[str, Any] = {}
        for column, raw in zip(columns, row, strict=False):
            text = raw.strip()
            if not text:
                continue
            if column.startswith(TAG_PREFIX):
                tags[column[len(TAG_PREFIX) :]] = text
            else:
                event[column] = _cell(column, text)
        if tags:
            json_tags = event.get(TAGS_COLUMN)
            if json_tags is None or isinstance(json_tags, dict):
                event[TAGS_COLUMN] = {**(json_tags or {}), **tags}
            # else: a `tags` cell that is not an object stays, and validation rejects the row.
        yield event


def read_csv_events(paths: Iterable[str]) -> Iterator[dict[str, Any]]:
    """The events of every file in `paths` in order; `-` reads stdin."""
    for path in paths:
        if path == "-":
            stdin = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8-sig", newline="")
            yield from events_from_csv(stdin, "<stdin>")
            continue
        try:
            # utf-8-sig: spreadsheet exports often start with a byte order mark.
            with open(path, encoding="utf-8-sig", newline="") as handle:
                yield from events_from_csv(handle, path)
        except FileNotFoundError:
            raise ConfigError(f"replay file not found: {path}") from None
        except UnicodeDecodeError as exc:
            raise CsvFormatError(f"{path}: not UTF-8 text ({exc})") from None


def read_csv_lines(paths: Iterable[str]) -> Iterator[bytes]:
    """Like `streams.embedded.replay.read_lines`, for CSV: one JSON object per row,
    ready to publish as one message."""
    for event in read_csv_events(paths):
        yield orjson.dumps(event)
