"""Write or check `schemas/usage_event.schema.json`, the published event contract.

    python -m schemas.export_schema            # regenerate the file
    python -m schemas.export_schema --check    # exit 1 if the file is stale

The schema comes from `UsageEvent.model_json_schema()`; the output is
deterministic (sorted keys, 2-space indent, trailing newline) so that the
committed file can be compared byte for byte with a fresh rendering.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from schemas.usage_event import DROPPED_TEXT_FIELDS, MAX_MESSAGE_BYTES, UsageEvent

SCHEMA_PATH = Path(__file__).with_name("usage_event.schema.json")

TITLE = "spendstream usage event"

DESCRIPTION = (
    "One model call's usage, published to the Kafka topic `spendstream.usage` as a JSON "
    "object, or as a JSON array of such objects in one message of at most "
    f"{MAX_MESSAGE_BYTES} bytes. Token semantics are the same for every provider: "
    "`input_tokens` counts all prompt tokens including cache reads (`cached_tokens`) and "
    "cache writes (`cache_write_tokens`); `output_tokens` counts all completion tokens "
    "including `reasoning_tokens`. Rules JSON Schema cannot express, enforced on ingest: "
    "cached_tokens + cache_write_tokens <= input_tokens; "
    "cache_write_1h_tokens <= cache_write_tokens; reasoning_tokens <= output_tokens; "
    "a timestamp more than 24 hours after the time it is processed is rejected. "
    f"Text fields ({', '.join(DROPPED_TEXT_FIELDS)}) are accepted and dropped: prompt and "
    "completion text is never stored."
)

# Descriptions the model's field names do not carry on their own.
FIELD_DESCRIPTIONS = {
    "input_tokens": "All prompt tokens, including cache reads and cache writes.",
    "cached_tokens": "Cache-read tokens; part of input_tokens.",
    "cache_write_tokens": "Cache-write tokens; part of input_tokens.",
    "output_tokens": "All completion tokens, including reasoning tokens.",
    "reasoning_tokens": "Reasoning (thinking) tokens; part of output_tokens.",
    "cache_write_1h_tokens": (
        "1-hour cache-write tokens (Anthropic's extended cache TTL); part of cache_write_tokens, "
        "priced at the 1-hour cache-write rate."
    ),
    "service_tier": (
        "The service tier that served the call, as the provider's response names it "
        "(e.g. flex, priority, default, standard); selects the price variant. "
        "Empty, default, standard and auto mean the standard price."
    ),
    "batch": "True when the call ran through a provider batch API (batch price variant).",
    "retry_of": "request_id of the call this one retries.",
    "reported_cost_usd": (
        "Cost reported by the provider or gateway; kept for reconciliation, never used as the cost."
    ),
}

# The model parses integer epoch milliseconds in a before-validator, which pydantic
# cannot see when it derives the schema: without this the contract would say
# "string only" and schema-validating producers would refuse valid integers.
TIMESTAMP_SCHEMA: dict[str, Any] = {
    "title": "Timestamp",
    "description": (
        "RFC 3339 date-time with an offset, ISO 8601 without an offset (taken as UTC), "
        "or integer epoch milliseconds."
    ),
    "anyOf": [
        {"type": "string", "format": "date-time"},
        {"type": "integer", "description": "Milliseconds since 1970-01-01T00:00:00Z."},
    ],
}


def build_schema() -> dict[str, Any]:
    schema = UsageEvent.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = TITLE
    schema["description"] = DESCRIPTION
    properties = schema["properties"]
    properties["timestamp"] = TIMESTAMP_SCHEMA
    for name, description in FIELD_DESCRIPTIONS.items():
        properties[name]["description"] = description
    return schema


def render() -> str:
    return json.dumps(build_schema(), indent=2, sort_keys=True) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m schemas.export_schema", description=__doc__)
    parser.add_argument(
        "--check", action="store_true", help="fail if the file differs from the model"
    )
    parser.add_argument("--path", type=Path, default=SCHEMA_PATH, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    expected = render()
    if args.check:
        try:
            current = args.path.read_text()
        except FileNotFoundError:
            current = None
        if current != expected:
            print(
                f"{args.path} is out of date: run `python -m schemas.export_schema`",
                file=sys.stderr,
            )
            return 1
        return 0
    args.path.write_text(expected)
    return 0


if __name__ == "__main__":
    sys.exit(main())
