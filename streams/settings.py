"""`Settings`: the one configuration class, read only at the edge (CLI, worker start).

Environment variables use the `SPENDSTREAM_` prefix; nested fields use `__`
(`SPENDSTREAM_ALERTS__SLACK_WEBHOOK_URL`). Secrets are `SecretStr`: never logged.
Everything below the edge takes plain constructor arguments.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.usage_event import DEFAULT_TIMESTAMP_FLOOR


def chdb_url_for(data_dir: Path) -> str:
    """The embedded ClickHouse (chdb) of a data dir: the default ledger."""
    return f"chdb://{(data_dir / 'clickhouse').resolve()}"


class AlertSettings(BaseModel):
    slack_webhook_url: SecretStr | None = None
    pagerduty_routing_key: SecretStr | None = None
    pagerduty_url: str = "https://events.pagerduty.com"
    console: bool = True


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SPENDSTREAM_", env_nested_delimiter="__", extra="ignore"
    )

    kafka_bootstrap: str = "127.0.0.1:9092"
    data_dir: Path = Path(".spendstream")
    clickhouse_url: str = ""  # chdb:///abs/path or http(s)://user@host:port/db; default: data_dir
    clickhouse_password: SecretStr | None = None
    pricing_file: Path | None = None
    config_file: Path | None = None

    usage_topic: str = "spendstream.usage"
    costed_topic: str = "spendstream.costed"
    dlq_topic: str = "spendstream.usage.dlq"
    topic_partitions: int = Field(default=4, ge=1)
    replication_factor: int = Field(default=1, ge=1)
    # Names the log whose offsets dead letters refer to: a new in-memory embedded
    # broker starts offsets again at 0 and gets a new epoch from `spendstream dev`.
    log_epoch: str = "kafka"
    # When the log epoch began: the ledger's rows ingested before it are not in this
    # log's changelogs, and the spend state is rebuilt from them at start
    # (streams/spend/ledger_state.py). Unset on Kafka, whose changelogs persist.
    log_epoch_started_at: datetime | None = None

    dedupe_horizon_days: int = Field(default=7, ge=1)
    # Events before this are dead letters (`timestamp_too_old`): a zero epoch or a
    # wrong unit, never a real AI API call.
    timestamp_floor: datetime = DEFAULT_TIMESTAMP_FLOOR
    # At most this many messages per ingest batch (a message may hold an array of
    # events); a batch holds what arrived while the previous one was being written.
    batch_max_events: int = Field(default=5000, ge=1)
    batch_within_seconds: float = Field(default=0.5, gt=0)
    # The embedded broker answers JoinGroup once half of this has passed, looking every
    # second (tansu's group coordinator): start-up time. 2 s would halve it, but a
    # follower's SyncGroup then gets one look before "rebalance in progress", and the
    # costed-skip case stalled Faust's recovery for minutes (2 of 4 runs). Kafka refuses
    # less than its group.min.session.timeout.ms (6 s by default): docker-compose.yml
    # sets 10.
    session_timeout_seconds: float = Field(default=4.0, gt=0)
    # A stop (SIGTERM/SIGINT) first ledgers what the broker holds for this worker's
    # usage partitions, for at most this long (streams/runtime/drain.py); 0 skips it.
    stop_drain_seconds: float = Field(default=30.0, ge=0)

    web_host: str = "127.0.0.1"
    web_port: int = 6066
    web_enabled: bool = True
    # The worker's address as people reach it (the links in alert messages); default
    # http://<web_host>:<web_port>.
    public_url: str = ""
    # HTTP ingest: with keys required, POST /v1/events and /v1/traces need a scoped key.
    ingest_keys_required: bool = False
    keys_file: Path | None = None  # default <data_dir>/ingest_keys.json
    http_max_body_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)
    # A connection must deliver a complete request head (request line and headers)
    # within this of opening, or of its previous response; a request body within
    # http_body_timeout_seconds of its head. A client that stalls is cut off
    # (streams/runtime/request_timeouts.py).
    http_header_timeout_seconds: float = Field(default=10.0, gt=0)
    http_body_timeout_seconds: float = Field(default=60.0, gt=0)
    # What a 202 of POST /v1/events means when the request names no `?ack=`: "ledger"
    # (its events are ledger or dead-letter rows) or "broker" (the broker holds them).
    # Unset: "ledger" on the embedded in-memory broker, whose crash loses what it holds;
    # "broker" on Kafka, which keeps it (see `resolved_http_default_ack`).
    http_default_ack: Literal["broker", "ledger"] | None = None
    # `dev --workers N`: shared secret between the worker that owns the embedded data
    # dir and its peers (POST /v1/ledger/insert and /v1/ledger/query); generated like
    # the analyst token when not set.
    peer_token: SecretStr | None = None
    # POST /v1/query, GET /v1/limits and the dashboard need `Authorization: Bearer
    # <token>`; when not set, generated at the first start into <data_dir>/tokens.json.
    analyst_token: SecretStr | None = None
    # Limits every analyst query runs under (streams/ledger/query_guard.py).
    query_max_seconds: float = Field(default=30.0, gt=0)
    query_max_memory_bytes: int = Field(default=2 * 1024**3, ge=1024**2)
    query_max_result_rows: int = Field(default=1_000_000, ge=1)
    query_max_threads: int = Field(default=1, ge=1)

    # Fault injection for the reliability suite: while this file exists, every ledger
    # write fails as if ClickHouse were down (the sink's real retry path runs).
    fault_sink_outage_file: Path | None = None
    # ... and while this one exists, every costed publish fails as if the broker refused
    # it (after the ledger write: the ingest's real retry path runs).
    fault_costed_outage_file: Path | None = None

    alerts: AlertSettings = Field(default_factory=AlertSettings)

    @property
    def in_memory_broker(self) -> bool:
        """True on the embedded broker: `spendstream dev`/`replay` start a new in-memory
        log and set its epoch's start (streams/embedded/stack.py); Kafka leaves it unset."""
        return self.log_epoch_started_at is not None

    @property
    def resolved_http_default_ack(self) -> Literal["broker", "ledger"]:
        if self.http_default_ack is not None:
            return self.http_default_ack
        return "ledger" if self.in_memory_broker else "broker"

    @property
    def resolved_clickhouse_url(self) -> str:
        return self.clickhouse_url or chdb_url_for(self.data_dir)
