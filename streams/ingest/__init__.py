"""The ingest side of the worker: usage messages -> decoded, de-duplicated, priced events;
costed events published, ledger and dead-letter rows written, offsets committed last."""
