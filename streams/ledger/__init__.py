"""ClickHouse, the system of record: connect, migrations, the batched sink, the Arrow
mapping, and access through the worker that owns the embedded data dir."""
