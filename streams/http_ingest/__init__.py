"""HTTP ingest for the worker's web server: `POST /v1/events` (canonical
events or provider shapes) and `POST /v1/traces` (OTLP/HTTP), with scoped
ingest keys. See `docs/http_ingest.md`.

    handler = IngestHandler(publish, IngestKeyStore.for_data_dir(data_dir))
    # POST /v1/events -> handler.handle_events, POST /v1/traces -> handler.handle_traces
"""

from streams.http_ingest.handler import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_EVENTS_PER_REQUEST,
    DEFAULT_RATE_LIMIT_PER_KEY,
    EVENTS_PATH,
    QUERY_FIELDS,
    TRACES_PATH,
    IngestHandler,
    Publish,
)
from streams.http_ingest.ownership import OWNERSHIP_MISMATCH
from streams.http_ingest.validation import NORMALIZATION_FAILED

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_EVENTS_PER_REQUEST",
    "DEFAULT_RATE_LIMIT_PER_KEY",
    "EVENTS_PATH",
    "NORMALIZATION_FAILED",
    "OWNERSHIP_MISMATCH",
    "QUERY_FIELDS",
    "TRACES_PATH",
    "IngestHandler",
    "Publish",
]
